"""PBA: augmentation policies on integer grids, schedules of them over epochs, applied in tf.data.

Population Based Augmentation (Ho et al. 2019) describes an augmentation
agent as a *policy*: each of 15 image ops present twice, each copy with a
probability level `0..10` (probability `level / 10`) and a magnitude level
`0..9`; and a *schedule*: the policy as a function of the epoch, found by
population-based training. Role-wise distillation (Fu et al.) uses one
schedule for the teacher's training and another for the student's
distillation (METHODS.md section 6).

- `Policy` (`policy.py`): an immutable policy; its flat form (60 ints) is
  what a search passes around, its JSON form what people read.
- `Schedule` (`schedule.py`): policies by start epoch, saved as versioned JSON.
- `PBAAugment` (`pipeline.py`): the `(images, labels) -> (images, labels)`
  tf.data map over batches, in TensorFlow ops only, that applies the
  schedule's current policy to each image as PBA's `apply_policy` does,
  with `PBAAugment.callback()` moving it from epoch to epoch; its per-image
  randomness is in `draws.py`.

Each op is the single implementation of `kd_keras.augment.ops`, called with
magnitude `level / 10` (PBA's `level / PARAMETER_MAX`), negated at random for
the ops `kd_keras.augment.ops` marks as signed. Where our ops' ranges differ
from those of PBA's `augmentation_transforms.py` (CIFAR, 32 x 32 pixels):

- Rotate (`3 * level` degrees), ShearX/Y (factor `0.03 * level`), Solarize
  (threshold `256 - int(25.6 * level)`) and Cutout (side `2 * level` pixels
  of 32, i.e. `level / 16` of the side) match. Our shears and rotations are
  about the image centre, PIL's shears about the top-left corner.
- TranslateX/Y: PBA's `level` pixels of 32, reproduced here as `level / 32`
  of the side (`max_translation=10 / 32`; the op's own default reaches 45%).
- Posterize: PBA keeps `4 - int(0.4 * level)` bits (4 down to 1); ours keeps
  `8 - round(0.4 * level)` (8 down to 4).
- Color, Contrast, Brightness, Sharpness: PBA's factor is
  `0.1 + 0.18 * level` (level 5 is about the identity); ours is
  `1 +- 0.09 * level` with a random sign (level 0 is the identity).
- Fill: PBA fills pixels moved in (and Cutout's square) with the data set's
  mean colour; here with `fill_value` (0 by default, the digits' background).

PBA's CIFAR pipeline then pads, crops and flips, and cuts out a 16-pixel
square; `then` chains such a standard augmentation after the policy.

References:
    Ho, Liang, Stoica, Abbeel, Chen. Population Based Augmentation: Efficient
    Learning of Augmentation Policy Schedules, ICML 2019 (github.com/arcelien/pba);
    Fu et al. Role-Wise Data Augmentation for Knowledge Distillation,
    arXiv:2004.08861 (seed 000).
"""

from kd_keras.augment.pba.pipeline import PBAAugment
from kd_keras.augment.pba.pipeline import ScheduleCallback
from kd_keras.augment.pba.policy import COPIES
from kd_keras.augment.pba.policy import COUNT_PROBABILITIES
from kd_keras.augment.pba.policy import HAND_SET_POLICY
from kd_keras.augment.pba.policy import MAGNITUDE_LEVELS
from kd_keras.augment.pba.policy import MAX_SHIFT
from kd_keras.augment.pba.policy import OP_OPTIONS
from kd_keras.augment.pba.policy import PARAMETER_MAX
from kd_keras.augment.pba.policy import PBA_OPS
from kd_keras.augment.pba.policy import PROBABILITY_LEVELS
from kd_keras.augment.pba.policy import RESAMPLE_PROBABILITY
from kd_keras.augment.pba.policy import Policy
from kd_keras.augment.pba.schedule import SCHEDULE_FORMAT
from kd_keras.augment.pba.schedule import SCHEDULE_VERSION
from kd_keras.augment.pba.schedule import Schedule
from kd_keras.augment.pba.schedule import as_schedule

__all__ = [
    "COPIES",
    "COUNT_PROBABILITIES",
    "HAND_SET_POLICY",
    "MAGNITUDE_LEVELS",
    "MAX_SHIFT",
    "OP_OPTIONS",
    "PARAMETER_MAX",
    "PBA_OPS",
    "PROBABILITY_LEVELS",
    "RESAMPLE_PROBABILITY",
    "SCHEDULE_FORMAT",
    "SCHEDULE_VERSION",
    "PBAAugment",
    "Policy",
    "Schedule",
    "ScheduleCallback",
    "as_schedule",
]
