"""Callbacks of a distillation run: phases, checkpoints, numerical faults, what to watch."""

from kd_keras.callbacks import backup
from kd_keras.callbacks import faults
from kd_keras.callbacks.backup import Backup
from kd_keras.callbacks.faults import CollapseMonitor
from kd_keras.callbacks.faults import NumericalFault
from kd_keras.callbacks.faults import StopOnNonFinite
from kd_keras.callbacks.phases import EpochPhases
from kd_keras.callbacks.phases import PhaseSchedule
from kd_keras.callbacks.phases import StepPhases
from kd_keras.callbacks.phases import reset_optimizer
from kd_keras.callbacks.policy_trajectory import PolicyTrajectory
from kd_keras.callbacks.tensorboard import TensorBoard
from kd_keras.callbacks.views import ViewSnapshots
