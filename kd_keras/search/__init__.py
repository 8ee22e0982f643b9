"""Population-based search of role-wise augmentation agents (PBA schedules) on Ray Tune.

Needs the optional `[search]` extra (`pip install "kd_keras[search]"`); Ray is
imported only when a search runs, never by `import kd_keras`.
"""

from kd_keras.search.explore import PolicyExplore
from kd_keras.search.pbt import SCHEDULE_FILE
from kd_keras.search.pbt import SUMMARY_FILE
from kd_keras.search.pbt import epochs_trained
from kd_keras.search.pbt import search
from kd_keras.search.pbt import split_train_validation
from kd_keras.search.policy_log import policy_history
from kd_keras.search.policy_log import policy_log_path
from kd_keras.search.ray_import import import_ray
from kd_keras.search.trainable import TrialSetup
from kd_keras.search.trainable import train_trial
