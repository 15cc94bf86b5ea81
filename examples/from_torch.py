"""Fine-tune an existing ``torch.nn`` model functionally, then hand the weights back to it.

``fnn.nn.from_torch(module)`` wraps any ``torch.nn.Module`` (your own, torchvision's, Hugging
Face's) as an fnn model with pure ``init`` / ``apply``: its parameters and buffers become plain
dicts named by ``state_dict()`` keys, and ``apply`` runs the module on whatever tensors it is
given. Then the whole fnn toolbox applies: ``fnn.value_and_grad``, ``fnn_optim``, ``fnn.jit``.
At the end ``fnn.nn.to_state_dict(params, state)`` loads straight into the original module with
``load_state_dict``.

The story, on the handwritten digits that ship with scikit-learn:

1. a small CNN with BatchNorm is trained the classic PyTorch way (``loss.backward()``,
   ``torch.optim``) on the digits 0-4 only;
2. it is wrapped with ``from_torch`` and fine-tuned functionally on all ten digits, BatchNorm's
   running statistics flowing through ``state``;
3. the fine-tuned weights are loaded back into the ``torch.nn`` model, which now gives the
   fine-tuned predictions (checked against fnn's, and its test accuracy printed).

    python examples/from_torch.py [--epochs 5] [--seed 0] [--jit]
"""

from __future__ import annotations

import argparse

import torch

import fnn
import fnn_data
import fnn_optim as optim


def make_torch_model() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1),
        torch.nn.BatchNorm2d(16),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(16 * 4 * 4, 10),
    )


def torch_accuracy(module: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    module.eval()
    with torch.no_grad():
        return (module(images).argmax(-1) == labels).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5, help="fine-tuning epochs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jit", action="store_true", help="compile the fine-tuning step")
    args = parser.parse_args()

    train, test = fnn_data.datasets.digits("train"), fnn_data.datasets.digits("test")
    x_train, y_train = torch.tensor(train["image"]), torch.tensor(train["label"])
    x_test, y_test = torch.tensor(test["image"]), torch.tensor(test["label"])
    B = args.batch_size

    # 1. Someone's torch.nn model, trained the classic way on the digits 0-4.
    torch.manual_seed(args.seed)
    torch_model = make_torch_model()
    torch_opt = torch.optim.Adam(torch_model.parameters(), lr=args.lr)
    low = y_train < 5
    x_low, y_low = x_train[low], y_train[low]
    torch_model.train()
    for _ in range(args.pretrain_epochs):
        for idx in torch.randperm(len(x_low)).split(B):
            loss = torch.nn.functional.cross_entropy(torch_model(x_low[idx]), y_low[idx])
            torch_opt.zero_grad()
            loss.backward()
            torch_opt.step()
    acc = torch_accuracy(torch_model, x_test, y_test)
    print(f"torch.nn model trained on digits 0-4: test accuracy on all ten digits {acc:.3f}")

    # 2. Wrap it: params and state are copies of its parameters and buffers, by state_dict name.
    model = fnn.nn.from_torch(torch_model)
    params, state = model.init(fnn.random.key(args.seed), x_train[:1])
    print("params:", fnn.tree.map(lambda t: tuple(t.shape), params))
    print("state: ", list(fnn.nn.to_state_dict(state)))

    def loss_fn(params, state, images, labels):
        logits, new_state = model.apply(params, images, state=state, train=True)
        return fnn.losses.cross_entropy(logits, labels), new_state

    opt = optim.adamw(args.lr, weight_decay=1e-4)
    opt_state = opt.init(params)

    def train_step(params, state, opt_state, images, labels):
        (loss, state), grads = fnn.value_and_grad(loss_fn, has_aux=True)(
            params, state, images, labels
        )
        updates, opt_state = opt.update(grads, opt_state, params)
        return optim.apply_updates(params, updates), state, opt_state, loss

    if args.jit:
        train_step = fnn.jit(train_step, donate_argnums=(0, 1, 2))

    def fnn_accuracy(params, state) -> float:
        logits, _ = model.apply(params, x_test, state=state)  # eval mode: running statistics
        return (logits.argmax(-1) == y_test).float().mean().item()

    shuffle_key = fnn.random.key(args.seed + 1)
    steps_per_epoch = len(x_train) // B
    for epoch in range(args.epochs):
        order = fnn.random.permutation(fnn.random.fold_in(shuffle_key, epoch), len(x_train))
        for i in range(steps_per_epoch):
            idx = order[i * B : (i + 1) * B]
            params, state, opt_state, loss = train_step(
                params, state, opt_state, x_train[idx], y_train[idx]
            )
        with torch.no_grad():
            acc = fnn_accuracy(params, state)
        print(f"fine-tuning epoch {epoch + 1}  loss {loss.item():.4f}  test accuracy {acc:.3f}")

    # 3. Export: the torch.nn model takes the fine-tuned weights and BatchNorm statistics.
    torch_model.load_state_dict(fnn.nn.to_state_dict(params, state))
    torch_model.eval()
    with torch.no_grad():
        torch_logits = torch_model(x_test)
        fnn_logits, _ = model.apply(params, x_test, state=state)
    diff = (torch_logits - fnn_logits).abs().max().item()
    torch.testing.assert_close(torch_logits, fnn_logits)
    print(f"torch.nn model after load_state_dict: same logits as fnn (max |difference| {diff:.1e})")
    print(f"torch.nn model test accuracy {torch_accuracy(torch_model, x_test, y_test):.3f}")


if __name__ == "__main__":
    main()
