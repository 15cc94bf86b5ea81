"""fnn_optim: Optax-style gradient transformations, optimizers and schedules on PyTorch.

``state = opt.init(params)``; ``updates, state = opt.update(grads, state, params)``;
``params = fnn_optim.apply_updates(params, updates)``. States are NamedTuples of tensors only
(the step count and every hyperparameter are 0-d tensors), so compiled steps never recompile;
:func:`get_hyperparams` / :func:`set_hyperparams` read and change any optimizer's hyperparameters.
For eager loops that want ``torch.optim``'s memory behaviour, :func:`step_` does a step in place
(on torch's fused kernels for ``sgd``, ``adam`` and ``adamw``). Eagerly, the functional
``update`` of ``adam``, ``adamw``, ``amsgrad`` and ``sgd`` with momentum runs the same kernels
on copies of the state, written into buffers of states and updates it returned two steps
before once nothing else refers to them (no page faults for memory the allocator would hand
back to the OS each step); the results are the chain's to float rounding.
Optimizer defaults follow ``torch.optim`` wherever torch has the optimizer.
"""

from fnn_optim._alias import adadelta as adadelta
from fnn_optim._alias import adagrad as adagrad
from fnn_optim._alias import adam as adam
from fnn_optim._alias import adamax as adamax
from fnn_optim._alias import adamw as adamw
from fnn_optim._alias import amsgrad as amsgrad
from fnn_optim._alias import asgd as asgd
from fnn_optim._alias import nadam as nadam
from fnn_optim._alias import radam as radam
from fnn_optim._alias import rmsprop as rmsprop
from fnn_optim._alias import rprop as rprop
from fnn_optim._alias import sgd as sgd
from fnn_optim._base import EmptyState as EmptyState
from fnn_optim._base import GradientTransformation as GradientTransformation
from fnn_optim._base import OptState as OptState
from fnn_optim._base import Params as Params
from fnn_optim._base import ScalarOrSchedule as ScalarOrSchedule
from fnn_optim._base import Schedule as Schedule
from fnn_optim._base import Updates as Updates
from fnn_optim._base import apply_updates as apply_updates
from fnn_optim._base import apply_updates_ as apply_updates_
from fnn_optim._base import chain as chain
from fnn_optim._base import get_hyperparams as get_hyperparams
from fnn_optim._base import identity as identity
from fnn_optim._base import named_chain as named_chain
from fnn_optim._base import set_hyperparams as set_hyperparams
from fnn_optim._inplace import step_ as step_
from fnn_optim._lbfgs import (
    ScaleByBacktrackingLinesearchState as ScaleByBacktrackingLinesearchState,
)
from fnn_optim._lbfgs import ScaleByLbfgsState as ScaleByLbfgsState
from fnn_optim._lbfgs import ScaleByZoomLinesearchState as ScaleByZoomLinesearchState
from fnn_optim._lbfgs import lbfgs as lbfgs
from fnn_optim._lbfgs import scale_by_backtracking_linesearch as scale_by_backtracking_linesearch
from fnn_optim._lbfgs import scale_by_lbfgs as scale_by_lbfgs
from fnn_optim._lbfgs import scale_by_zoom_linesearch as scale_by_zoom_linesearch
from fnn_optim._more_alias import adabelief as adabelief
from fnn_optim._more_alias import adafactor as adafactor
from fnn_optim._more_alias import lamb as lamb
from fnn_optim._more_alias import lars as lars
from fnn_optim._more_alias import lion as lion
from fnn_optim._more_alias import muon as muon
from fnn_optim._more_alias import novograd as novograd
from fnn_optim._more_transforms import AdaptiveGradClipState as AdaptiveGradClipState
from fnn_optim._more_transforms import AddNoiseState as AddNoiseState
from fnn_optim._more_transforms import ClipByBlockRmsState as ClipByBlockRmsState
from fnn_optim._more_transforms import ClipByGlobalNormState as ClipByGlobalNormState
from fnn_optim._more_transforms import ClipState as ClipState
from fnn_optim._more_transforms import EmaState as EmaState
from fnn_optim._more_transforms import FactoredState as FactoredState
from fnn_optim._more_transforms import ScaleByBeliefState as ScaleByBeliefState
from fnn_optim._more_transforms import ScaleByLionState as ScaleByLionState
from fnn_optim._more_transforms import ScaleByMuonState as ScaleByMuonState
from fnn_optim._more_transforms import ScaleByNovogradState as ScaleByNovogradState
from fnn_optim._more_transforms import ScaleByParamBlockRmsState as ScaleByParamBlockRmsState
from fnn_optim._more_transforms import ScaleByTrustRatioState as ScaleByTrustRatioState
from fnn_optim._more_transforms import ZeroNansState as ZeroNansState
from fnn_optim._more_transforms import adaptive_grad_clip as adaptive_grad_clip
from fnn_optim._more_transforms import add_noise as add_noise
from fnn_optim._more_transforms import centralize as centralize
from fnn_optim._more_transforms import clip as clip
from fnn_optim._more_transforms import clip_by_block_rms as clip_by_block_rms
from fnn_optim._more_transforms import clip_by_global_norm as clip_by_global_norm
from fnn_optim._more_transforms import ema as ema
from fnn_optim._more_transforms import scale_by_belief as scale_by_belief
from fnn_optim._more_transforms import scale_by_factored_rms as scale_by_factored_rms
from fnn_optim._more_transforms import scale_by_lion as scale_by_lion
from fnn_optim._more_transforms import scale_by_muon as scale_by_muon
from fnn_optim._more_transforms import scale_by_novograd as scale_by_novograd
from fnn_optim._more_transforms import scale_by_param_block_rms as scale_by_param_block_rms
from fnn_optim._more_transforms import scale_by_trust_ratio as scale_by_trust_ratio
from fnn_optim._more_transforms import zero_nans as zero_nans
from fnn_optim._plateau import ReduceLROnPlateauState as ReduceLROnPlateauState
from fnn_optim._plateau import reduce_on_plateau as reduce_on_plateau
from fnn_optim._schedules import constant as constant
from fnn_optim._schedules import constant_lr as constant_lr
from fnn_optim._schedules import constant_schedule as constant_schedule
from fnn_optim._schedules import cosine_annealing_lr as cosine_annealing_lr
from fnn_optim._schedules import cosine_annealing_warm_restarts as cosine_annealing_warm_restarts
from fnn_optim._schedules import cosine_decay as cosine_decay
from fnn_optim._schedules import cosine_decay_schedule as cosine_decay_schedule
from fnn_optim._schedules import cosine_onecycle_schedule as cosine_onecycle_schedule
from fnn_optim._schedules import cyclic as cyclic
from fnn_optim._schedules import exponential_decay as exponential_decay
from fnn_optim._schedules import exponential_lr as exponential_lr
from fnn_optim._schedules import join_schedules as join_schedules
from fnn_optim._schedules import linear as linear
from fnn_optim._schedules import linear_lr as linear_lr
from fnn_optim._schedules import linear_schedule as linear_schedule
from fnn_optim._schedules import multistep_lr as multistep_lr
from fnn_optim._schedules import onecycle as onecycle
from fnn_optim._schedules import piecewise_constant as piecewise_constant
from fnn_optim._schedules import piecewise_constant_schedule as piecewise_constant_schedule
from fnn_optim._schedules import polynomial as polynomial
from fnn_optim._schedules import polynomial_lr as polynomial_lr
from fnn_optim._schedules import polynomial_schedule as polynomial_schedule
from fnn_optim._schedules import sgdr as sgdr
from fnn_optim._schedules import sgdr_schedule as sgdr_schedule
from fnn_optim._schedules import step_lr as step_lr
from fnn_optim._schedules import warmup_cosine as warmup_cosine
from fnn_optim._schedules import warmup_cosine_decay_schedule as warmup_cosine_decay_schedule
from fnn_optim._torch_interop import from_torch_state as from_torch_state
from fnn_optim._torch_interop import to_torch_state as to_torch_state
from fnn_optim._transforms import AddDecayedWeightsState as AddDecayedWeightsState
from fnn_optim._transforms import ScaleByAdaDeltaState as ScaleByAdaDeltaState
from fnn_optim._transforms import ScaleByAdamaxState as ScaleByAdamaxState
from fnn_optim._transforms import ScaleByAdamState as ScaleByAdamState
from fnn_optim._transforms import ScaleByAsgdState as ScaleByAsgdState
from fnn_optim._transforms import ScaleByLearningRateState as ScaleByLearningRateState
from fnn_optim._transforms import ScaleByNadamState as ScaleByNadamState
from fnn_optim._transforms import ScaleByRAdamState as ScaleByRAdamState
from fnn_optim._transforms import ScaleByRmsState as ScaleByRmsState
from fnn_optim._transforms import ScaleByRpropState as ScaleByRpropState
from fnn_optim._transforms import ScaleByRssState as ScaleByRssState
from fnn_optim._transforms import ScaleByRStdDevState as ScaleByRStdDevState
from fnn_optim._transforms import ScaleByScheduleState as ScaleByScheduleState
from fnn_optim._transforms import ScaleByTimeDecayState as ScaleByTimeDecayState
from fnn_optim._transforms import ScaleState as ScaleState
from fnn_optim._transforms import TraceState as TraceState
from fnn_optim._transforms import add_decayed_weights as add_decayed_weights
from fnn_optim._transforms import scale as scale
from fnn_optim._transforms import scale_by_adadelta as scale_by_adadelta
from fnn_optim._transforms import scale_by_adam as scale_by_adam
from fnn_optim._transforms import scale_by_adamax as scale_by_adamax
from fnn_optim._transforms import scale_by_asgd as scale_by_asgd
from fnn_optim._transforms import scale_by_learning_rate as scale_by_learning_rate
from fnn_optim._transforms import scale_by_nadam as scale_by_nadam
from fnn_optim._transforms import scale_by_radam as scale_by_radam
from fnn_optim._transforms import scale_by_rms as scale_by_rms
from fnn_optim._transforms import scale_by_rprop as scale_by_rprop
from fnn_optim._transforms import scale_by_rss as scale_by_rss
from fnn_optim._transforms import scale_by_schedule as scale_by_schedule
from fnn_optim._transforms import scale_by_stddev as scale_by_stddev
from fnn_optim._transforms import scale_by_time_decay as scale_by_time_decay
from fnn_optim._transforms import trace as trace
from fnn_optim._wrappers import ApplyIfFiniteState as ApplyIfFiniteState
from fnn_optim._wrappers import InjectHyperparamsState as InjectHyperparamsState
from fnn_optim._wrappers import LookaheadState as LookaheadState
from fnn_optim._wrappers import MaskedNode as MaskedNode
from fnn_optim._wrappers import MaskedState as MaskedState
from fnn_optim._wrappers import MultiSteps as MultiSteps
from fnn_optim._wrappers import MultiStepsState as MultiStepsState
from fnn_optim._wrappers import PartitionState as PartitionState
from fnn_optim._wrappers import apply_if_finite as apply_if_finite
from fnn_optim._wrappers import flatten as flatten
from fnn_optim._wrappers import freeze as freeze
from fnn_optim._wrappers import inject_hyperparams as inject_hyperparams
from fnn_optim._wrappers import lookahead as lookahead
from fnn_optim._wrappers import masked as masked
from fnn_optim._wrappers import partition as partition
from fnn_optim._wrappers import set_to_zero as set_to_zero

__all__ = [
    "AdaptiveGradClipState",
    "AddDecayedWeightsState",
    "AddNoiseState",
    "ApplyIfFiniteState",
    "ClipByBlockRmsState",
    "ClipByGlobalNormState",
    "ClipState",
    "EmaState",
    "EmptyState",
    "FactoredState",
    "GradientTransformation",
    "InjectHyperparamsState",
    "LookaheadState",
    "MaskedNode",
    "MaskedState",
    "MultiSteps",
    "MultiStepsState",
    "OptState",
    "Params",
    "PartitionState",
    "ReduceLROnPlateauState",
    "ScalarOrSchedule",
    "ScaleByAdaDeltaState",
    "ScaleByAdamState",
    "ScaleByAdamaxState",
    "ScaleByAsgdState",
    "ScaleByBacktrackingLinesearchState",
    "ScaleByBeliefState",
    "ScaleByLbfgsState",
    "ScaleByLearningRateState",
    "ScaleByLionState",
    "ScaleByMuonState",
    "ScaleByNadamState",
    "ScaleByNovogradState",
    "ScaleByParamBlockRmsState",
    "ScaleByRAdamState",
    "ScaleByRStdDevState",
    "ScaleByRmsState",
    "ScaleByRpropState",
    "ScaleByRssState",
    "ScaleByScheduleState",
    "ScaleByTimeDecayState",
    "ScaleByTrustRatioState",
    "ScaleByZoomLinesearchState",
    "ScaleState",
    "Schedule",
    "TraceState",
    "Updates",
    "ZeroNansState",
    "adabelief",
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "adaptive_grad_clip",
    "add_decayed_weights",
    "add_noise",
    "amsgrad",
    "apply_if_finite",
    "apply_updates",
    "apply_updates_",
    "asgd",
    "centralize",
    "chain",
    "clip",
    "clip_by_block_rms",
    "clip_by_global_norm",
    "constant",
    "constant_lr",
    "constant_schedule",
    "cosine_annealing_lr",
    "cosine_annealing_warm_restarts",
    "cosine_decay",
    "cosine_decay_schedule",
    "cosine_onecycle_schedule",
    "cyclic",
    "ema",
    "exponential_decay",
    "exponential_lr",
    "flatten",
    "freeze",
    "from_torch_state",
    "get_hyperparams",
    "identity",
    "inject_hyperparams",
    "join_schedules",
    "lamb",
    "lars",
    "lbfgs",
    "linear",
    "linear_lr",
    "linear_schedule",
    "lion",
    "lookahead",
    "masked",
    "multistep_lr",
    "muon",
    "nadam",
    "named_chain",
    "novograd",
    "onecycle",
    "partition",
    "piecewise_constant",
    "piecewise_constant_schedule",
    "polynomial",
    "polynomial_lr",
    "polynomial_schedule",
    "radam",
    "reduce_on_plateau",
    "rmsprop",
    "rprop",
    "scale",
    "scale_by_adadelta",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_asgd",
    "scale_by_backtracking_linesearch",
    "scale_by_belief",
    "scale_by_factored_rms",
    "scale_by_lbfgs",
    "scale_by_learning_rate",
    "scale_by_lion",
    "scale_by_muon",
    "scale_by_nadam",
    "scale_by_novograd",
    "scale_by_param_block_rms",
    "scale_by_radam",
    "scale_by_rms",
    "scale_by_rprop",
    "scale_by_rss",
    "scale_by_schedule",
    "scale_by_stddev",
    "scale_by_time_decay",
    "scale_by_trust_ratio",
    "scale_by_zoom_linesearch",
    "set_hyperparams",
    "set_to_zero",
    "sgd",
    "sgdr",
    "sgdr_schedule",
    "step_",
    "step_lr",
    "to_torch_state",
    "trace",
    "warmup_cosine",
    "warmup_cosine_decay_schedule",
    "zero_nans",
]
