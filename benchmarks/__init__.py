"""Side-by-side benchmarks of fnn against its peers; see README.md."""
