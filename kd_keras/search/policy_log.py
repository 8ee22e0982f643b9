"""Read a trial's PBT policy log back into the policy history its weights were trained under."""

import json
import pathlib

from kd_keras.search.trainable import POLICY


def policy_log_path(experiment, trial_id):
    """Return the path of the policy log Ray Tune's PBT keeps for `trial_id` in `experiment`."""
    return pathlib.Path(experiment) / f"pbt_policy_{trial_id}.txt"


def policy_history(experiment, trial_id, policy, epochs):
    """Return a trial's `[(epoch, flat_policy), ...]` from its PBT policy log, as PBA parses it.

    With `log_config=True`, PBT writes one JSON line per exploit,
    `[trial, cloned trial, trial's iteration, cloned trial's iteration,
    cloned trial's config, new config]`, into `pbt_policy_<trial_id>.txt`,
    first copying the cloned trial's own log: the file is the lineage of the
    trial's weights. The first line's cloned config is the policy the lineage
    started with (epoch 0); each line's new config takes over from the cloned
    trial's iteration (the epoch of the weights it resumed from), replacing
    anything logged from that epoch on. A trial that never exploited has no
    log and trained under `policy` throughout. Changes at or after `epochs`
    were never trained under and are dropped.

    References:
        Ho et al. Population Based Augmentation, ICML 2019 (the schedule of
        the best trial, parsed from its policy log).

    Args:
        experiment: the Ray Tune experiment directory.
        trial_id: the trial's id.
        policy: the trial's flat policy, used when it has no log.
        epochs: epochs of the search.

    Returns:
        The history, sorted by epoch, for `kd_keras.augment.pba.Schedule.from_history`.

    Example:
    ```python
    history = kd_keras.search.policy_history("runs/search/ray", trial_id, flat, 30)
    ```
    """
    path = policy_log_path(experiment, trial_id)
    if not path.exists():
        return [(0, list(policy))]
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    history = [(0, list(lines[0][4][POLICY]))]
    for _, _, _, cloned_iteration, _, new_config in lines:
        start = int(cloned_iteration)
        history = [entry for entry in history if entry[0] < start]
        history.append((start, list(new_config[POLICY])))
    return [entry for entry in history if entry[0] < epochs]
