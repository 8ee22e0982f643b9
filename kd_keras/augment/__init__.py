"""Augmenters: how each method makes the views a distillation step trains on."""

from kd_keras.augment import backward
from kd_keras.augment import ops
from kd_keras.augment import pba
from kd_keras.augment import tst
from kd_keras.augment import warp
from kd_keras.augment.backward import BackwardPerturbation
from kd_keras.augment.base import Augmenter
from kd_keras.augment.base import View
from kd_keras.augment.base import Views
from kd_keras.augment.cutmix_pick import CutMixPick
from kd_keras.augment.function_matching import FunctionMatching
from kd_keras.augment.hard import SpatialAugmenter
from kd_keras.augment.hard_vae import GenerativeAugmenter
from kd_keras.augment.mixing import CutMix
from kd_keras.augment.mixing import MixUp
from kd_keras.augment.seed import ReplicaSeedGenerator
from kd_keras.augment.stack import Stack
from kd_keras.augment.tst import LearnedPolicy
from kd_keras.augment.warp import affine_matrix
from kd_keras.augment.warp import affine_warp
