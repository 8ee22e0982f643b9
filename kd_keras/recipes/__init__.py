"""Named recipes: functions returning plain configs that reproduce a paper's setting.

A recipe says which augmenter, losses, weights, optimiser and schedule a
method uses, as a plain dict (see `kd_keras.recipes.blocks` for its keys).
Each recipe function's keyword arguments are its method's options;
everything else is a key of the config, overridden by a dotted path:

    config = kd_keras.recipes.get("cutmix", {"alpha": 0.4, "optimizer.learning_rate": 0.1})

`kd_keras.recipes.build` turns a config into a Distiller, its optimisers
and callbacks. `kd-keras distill --print_config` prints the resolved config.
"""

import copy
import inspect
import json
import math

from kd_keras.recipes import blocks
from kd_keras.recipes import build
from kd_keras.recipes.backward import backward
from kd_keras.recipes.hard import hard
from kd_keras.recipes.hard import hard_vae
from kd_keras.recipes.kd import kd
from kd_keras.recipes.mixing import cutmix
from kd_keras.recipes.mixing import cutmix_pick
from kd_keras.recipes.mixing import funmatch
from kd_keras.recipes.mixing import mixup
from kd_keras.recipes.rolewise import rolewise
from kd_keras.recipes.tst import tst

_RECIPES = {
    "kd": kd,
    "mixup": mixup,
    "cutmix": cutmix,
    "cutmix_pick": cutmix_pick,
    "funmatch": funmatch,
    "tst": tst,
    "hard": hard,
    "hard_vae": hard_vae,
    "backward": backward,
    "rolewise": rolewise,
}
# Options the jobs fill in from the models they run, when a recipe takes them.
_MODEL_OPTIONS = ("teacher", "student")


def names():
    """Return the names of every recipe."""
    return sorted(_RECIPES)


def options(name):
    """Return the names of a recipe's options: its function's keyword arguments."""
    return list(inspect.signature(_function(name)).parameters)


def get(recipe, overrides=None, teacher=None, student=None):
    """Resolve a recipe into its config, with options and dotted-key overrides applied.

    Args:
        recipe: a name from `kd_keras.recipes.names()`, or a config dict
            (copied, never modified).
        overrides: a dict of recipe options (`{"temperature": 2.0}`) and
            config keys, top-level or dotted (`{"optimizer.learning_rate": 0.1}`).
        teacher: the teacher's zoo name, for recipes with per-pair settings.
        student: the student's zoo name (also picks the small students' rate).

    Returns:
        The config, a plain dict.

    Example:
    ```python
    config = kd_keras.recipes.get("kd", {"temperature": 2.0, "epochs": 30})
    ```
    """
    overrides = dict(overrides or {})
    if isinstance(recipe, dict):
        config = copy.deepcopy(recipe)
        name = config.get("name", "custom")
    elif "+" in str(recipe):
        name = recipe
        config = _stacked(recipe, overrides, teacher, student)
    else:
        name = recipe
        function = _function(name)
        accepted = inspect.signature(function).parameters
        chosen = {key: overrides.pop(key) for key in list(overrides) if key in accepted}
        for key, value in chosen.items():
            _check_value(f"Recipe {name!r} option {key}", value, accepted[key].default, key)
        for key in _MODEL_OPTIONS:
            if key in accepted and key not in chosen:
                chosen[key] = {"teacher": teacher, "student": student}[key]
        config = function(**chosen)
    if student in blocks.SMALL_STUDENTS and config.get("small_student_learning_rate"):
        config["optimizer"]["learning_rate"] = config["small_student_learning_rate"]
    for path, value in overrides.items():
        _set(config, name, path, value)
    return config


def _stacked(recipe, overrides, teacher, student):
    """`"a+b"`: recipe a's config with its augmenter followed by recipe b's.

    A recipe option goes to every part that has it; the first part with
    phases brings its phases and augmenter optimiser, the first with a host
    augmentation brings it; everything else (losses, optimiser, schedule)
    is the first part's.
    """
    parts = []
    for part in recipe.split("+"):
        accepted = options(part)
        chosen = {key: value for key, value in overrides.items() if key in accepted}
        parts.append(get(part, chosen, teacher=teacher, student=student))
    for key in {key for part in recipe.split("+") for key in options(part)}:
        overrides.pop(key, None)
    config = copy.deepcopy(parts[0])
    config["name"] = recipe
    stages = [part["augmenter"] for part in parts if part["augmenter"] is not None]
    config["augmenter"] = (
        None
        if not stages
        else stages[0]
        if len(stages) == 1
        else {"class_name": "Stack", "stages": stages}
    )
    with_phases = [part for part in parts if part["phases"] is not None]
    if with_phases:
        config["phases"] = with_phases[0]["phases"]
        config["augmenter_optimizer"] = with_phases[0]["augmenter_optimizer"]
    hosts = [part["host_augment"] for part in parts if part["host_augment"] is not None]
    config["host_augment"] = hosts[0] if hosts else None
    return config


def to_json(config):
    """The config as indented JSON (objects that are not JSON become their repr)."""
    return json.dumps(config, indent=2, sort_keys=True, default=repr)


def _function(name):
    if "+" in str(name):
        raise ValueError(
            f"{name!r} stacks recipes: its options are those of its parts "
            f"({', '.join(name.split('+'))})."
        )
    if name not in _RECIPES:
        raise ValueError(f"Unknown recipe {name!r}: choose one of {', '.join(names())}.")
    return _RECIPES[name]


def _set(config, name, path, value):
    node, keys = config, str(path).split(".")
    for depth, key in enumerate(keys):
        if isinstance(node, list) and key.isdigit() and int(key) < len(node):
            key = int(key)
        elif not isinstance(node, dict) or key not in node:
            known = options(name) if name in _RECIPES else []
            where = ".".join(keys[:depth]) or "the config"
            keys_here = sorted(node) if isinstance(node, dict) else []
            raise ValueError(
                f"Recipe {name!r} has no option or setting {path!r}: its options are "
                f"{', '.join(known) or 'none'}; {where} holds "
                f"{', '.join(keys_here) or 'no settings'}."
            )
        if depth == len(keys) - 1:
            _check_value(f"Recipe {name!r} setting {path}", value, node[key], keys[-1])
            node[key] = value
        else:
            node = node[key]


# Settings whose smallest sensible value is known.
_MINIMUM = {"epochs": 1, "batch_size": 1, "learning_rate": 0.0}


def _check_value(what, value, default, key):
    # A value of the default's kind, caught here rather than deep in a traced
    # step (e.g. --set temperature=hot).
    if isinstance(default, bool):
        valid, kind = isinstance(value, bool), "True or False"
    elif isinstance(default, (int, float)):
        valid = (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and (isinstance(value, int) or math.isfinite(value))
            and (not isinstance(default, int) or value == int(value))
            and value >= _MINIMUM.get(key, -math.inf)
            and (key != "temperature" or value > 0)
        )
        kind = "a whole number" if isinstance(default, int) else "a finite number"
        if key in _MINIMUM:
            kind += f" >= {_MINIMUM[key]}"
        elif key == "temperature":
            kind += " > 0"
    elif isinstance(default, (tuple, list)):
        valid, kind = isinstance(value, (tuple, list)), "a list"
    elif isinstance(default, dict):
        valid, kind = isinstance(value, dict) or value is None, "a dict"
    else:
        return
    if not valid:
        raise ValueError(f"{what} takes {kind} (default {default!r}), got {value!r}.")
