"""Benchmark: role-wise KD's searched student agent vs a hand-set policy vs no augmentation.

The setting of Fu et al. (arXiv:2004.08861, METHODS.md §6) at CPU scale on
the embedded digits (`--dataset=digits`, the default): the shipped full-precision CNN teacher and a low-bit
(DoReFa, `--bits`) student, distilled with KD (T = 4, 0.1 CE + 0.9 KD, SGD;
recipe `kd` and, with a policy, recipe `rolewise`, which differ only in the
augmentation) under

  (a) no augmentation (recipe `kd`),
  (b) the hand-set policy of recipe `rolewise` (`pba.HAND_SET_POLICY`),
  (c) the student agent found by `kd_keras.search.search(role="student")`:
      population-based training of the same student under KD with the
      teacher frozen, on a `--train_size` subset of the training split,
      rewarded by accuracy on a held-out fifth of it (never the test set);
      the schedule is stretched from `--search_epochs` to `--epochs`.

Columns: student test accuracy, clean and on the shifted test copy, mean ±
std over seeds (each row trains on the full training split). Below the
table: the search's cost, wall time per trial-epoch on this machine (2 cores,
one trial per core), and the found schedule.

With `--dataset=mnist1d` the same three rows run on MNIST-1D, where
augmentation helps a clean held-out split (METHODS.md, "Offline
benchmarks"): the shipped CNN teacher (90%) into the full-precision
`mnist1d_mlp` (`--bits=0`), KD at T = 4 with 0.1 CE + 0.9 KD, Adam 1e-2,
batch 100, 60 epochs (MNIST-1D's probes, as benchmarks/kd_thrives.py).
PBA's ops take inputs in [0, 1], MNIST-1D's are standardised: the PBA rows
give the recipe the training split's min and max as `value_range`, so the
ops see each batch mapped onto [0, 1] and the networks the standardised
values, and fill with 0, the data's mean (PBA fills with the data set
mean). The hand-set row keeps the ops of `pba.HAND_SET_POLICY`
that act along a one-row signal (`ONE_ROW_OPS`: TranslateX, Contrast,
Cutout); the search explores all 15 ops, as PBA does, on 3,200 training
sequences rewarded by the other 800 (`--train_size`). The searched schedule
is drawn to `--plot` and everything written to `--json`.

Usage:
    PYTHONPATH=. python benchmarks/rolewise.py        # population 4, 6 search epochs, 20 epochs, 3 seeds
    PYTHONPATH=. python benchmarks/rolewise.py --population=2 --search_epochs=2 --epochs=2 --seeds=1
    PYTHONPATH=. python benchmarks/rolewise.py --dataset=mnist1d   # population 8, 30 search epochs, 60 epochs
"""

import json
import os
import pathlib
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

import kd_keras  # noqa: E402
from kd_keras.augment import pba  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", "digits", ["digits", "mnist1d"], "Data set (see the docstring).")
flags.DEFINE_integer(
    "epochs", None, "Distillation epochs of every row (default: 20 digits, 60 mnist1d)."
)
flags.DEFINE_integer("seeds", 3, "Seeds per row (mean ± std).")
flags.DEFINE_string("student", None, "Student zoo name (default: mlp, mnist1d_mlp).")
flags.DEFINE_integer(
    "bits",
    None,
    "Bits of the student's weights and activations (DoReFa); 0: full precision "
    "(default: 2 digits, 0 mnist1d).",
)
flags.DEFINE_integer("population", None, "Search: trials (default: 4 digits, 8 mnist1d).")
flags.DEFINE_integer(
    "search_epochs", None, "Search: epochs of every trial (default: 6 digits, 30 mnist1d)."
)
flags.DEFINE_integer(
    "perturbation_interval",
    None,
    "Search: epochs between exploit/explore (default: 1 digits, 3 mnist1d).",
)
flags.DEFINE_enum(
    "initial_policy",
    "zeros",
    ["zeros", "random"],
    "Search: trials start without augmentation (PBA) or from random policies.",
)
flags.DEFINE_integer(
    "train_size",
    None,
    "Search: training subset, the rest of 80% unused (default: 1000 digits, all 3200 mnist1d).",
)
flags.DEFINE_string("search_out", None, "Search directory (default: a temporary one).")
flags.DEFINE_string("schedule", None, "Use this schedule JSON instead of searching.")
flags.DEFINE_list(
    "rows",
    ["none", "hand", "searched"],
    "Rows to run: none, hand, searched (without searched no search runs). With --json, "
    "rows run earlier with the same settings are kept from the file, so one table can be "
    "built by several runs.",
)
flags.DEFINE_string("json", None, "Write settings, per-seed results and the schedule here.")
flags.DEFINE_string(
    "plot", None, "Draw the searched schedule (probability, magnitude vs epoch) here."
)

DEFAULTS = {
    "digits": {
        "epochs": 20,
        "student": "mlp",
        "bits": 2,
        "population": 4,
        "search_epochs": 6,
        "perturbation_interval": 1,
        "train_size": 1000,
    },
    "mnist1d": {
        "epochs": 60,
        "student": "mnist1d_mlp",
        "bits": 0,
        "population": 8,
        "search_epochs": 30,
        "perturbation_interval": 3,
        "train_size": None,
    },
}
ROWS = {
    "none": "KD, no augmentation",
    "hand": "KD + hand-set policy",
    "searched": "KD + searched agent",
}
# MNIST-1D's probes (benchmarks/kd_thrives.py): Adam 1e-2, constant, batch 100.
MNIST1D_SETTINGS = {
    "optimizer": {"class_name": "Adam", "learning_rate": 0.01},
    "schedule": None,
    "batch_size": 100,
}
# The ops of the hand-set policy that act along a one-row signal. Dropped:
# Rotate, ShearY and TranslateY move samples off the single row (the rest is
# fill); ShearX (about the centre row), Color and Sharpness (one row, one
# channel) are identities; Brightness scales towards the range's minimum.
ONE_ROW_OPS = ("TranslateX", "Contrast", "Cutout")


def setting(name):
    value = getattr(FLAGS, name)
    return DEFAULTS[FLAGS.dataset][name] if value is None else value


def hand_set_one_row():
    """`pba.HAND_SET_POLICY` restricted to `ONE_ROW_OPS`."""
    keep = np.array([[name in ONE_ROW_OPS] for name in pba.PBA_OPS])
    policy = pba.HAND_SET_POLICY
    return pba.Policy(np.where(keep, policy.probabilities, 0), np.where(keep, policy.magnitudes, 0))


def accuracy(model, data):
    return kd_keras.resolve.evaluate(model, data)


def distil(teacher, bundle, recipe, seed):
    keras.utils.set_random_seed(seed)
    bits = setting("bits") or None
    student = kd_keras.models.get(
        setting("student"), bundle.input_shape, bundle.num_classes, bits=bits
    )
    extra = MNIST1D_SETTINGS if FLAGS.dataset == "mnist1d" else {}
    distiller = kd_keras.distill(
        teacher,
        student,
        bundle.train,
        recipe=recipe,
        epochs=setting("epochs"),
        seed=seed,
        verbose=0,
        **extra,
    )
    scores = [accuracy(distiller.student, bundle.test)]
    if bundle.test_shifted is not None:
        scores.append(accuracy(distiller.student, bundle.test_shifted))
    return scores


def search_student_agent(out, dataset, teacher, **recipe_overrides):
    kd_keras.search.search(
        role="student",
        dataset=dataset,
        model=setting("student"),
        bits=setting("bits") or None,
        teacher=teacher,
        population=setting("population"),
        epochs=setting("search_epochs"),
        perturbation_interval=setting("perturbation_interval"),
        train_size=setting("train_size"),
        initial_policy=FLAGS.initial_policy,
        seed=0,
        out=out,
        **recipe_overrides,
    )
    return json.loads((pathlib.Path(out) / kd_keras.search.SUMMARY_FILE).read_text())


def describe(schedule):
    lines = []
    for start, policy in schedule.entries:
        used = [
            f"{name} p{policy.probabilities[i, j] / 10:.1f} m{policy.magnitudes[i, j]}"
            for i, name in enumerate(pba.PBA_OPS)
            for j in range(pba.COPIES)
            if policy.probabilities[i, j] > 0
        ]
        lines.append(f"  from epoch {start}: " + (", ".join(used) or "no augmentation"))
    return "\n".join(lines)


def main(argv):
    del argv
    columns = ["acc (%)"]
    if FLAGS.dataset == "digits":
        bundle = kd_keras.data.load_digits()
        teacher = kd_keras.resolve.resolve_teacher("shipped:digits_cnn", bundle)
        search_data, search_teacher, policy_options, search_options = (
            "digits",
            "shipped:digits_cnn",
            {},
            {},
        )
        hand_set = pba.HAND_SET_POLICY
        columns.append("shifted (%)")
        scores = (
            f"{accuracy(teacher, bundle.test):.2%} test accuracy, "
            f"{accuracy(teacher, bundle.test_shifted):.2%} shifted"
        )
    else:
        bundle = kd_keras.data.load_mnist1d()
        search_data, search_teacher = "mnist1d", bundle.default_teacher
        teacher = kd_keras.resolve.resolve_teacher(search_teacher, bundle)
        # The ops' [0, 1] is the training split's range (the search trains
        # and validates on parts of it); 0 is the mean of standardised data.
        value_range = [float(bundle.train[0].min()), float(bundle.train[0].max())]
        policy_options = {"value_range": value_range, "fill_value": 0.0}
        search_options = {
            **policy_options,
            "batch_size": MNIST1D_SETTINGS["batch_size"],
            "optimizer": MNIST1D_SETTINGS["optimizer"],
            "schedule": None,
            "num_cpus": 2,
        }
        hand_set = hand_set_one_row()
        scores = (
            f"{accuracy(teacher, bundle.test):.2%} test accuracy; PBA's [0, 1] is the "
            f"training range [{value_range[0]:.3f}, {value_range[1]:.3f}], fill 0 (the mean)"
        )
    bits = setting("bits")
    print(
        f"{FLAGS.dataset}: teacher {scores}; student {setting('student')} at "
        + (f"{bits} bits" if bits else "full precision")
        + f"; {setting('epochs')} epochs; {FLAGS.seeds} seed(s); train {len(bundle.train[1])}",
        flush=True,
    )
    unknown = set(FLAGS.rows) - set(ROWS)
    if unknown:
        raise app.UsageError(f"--rows takes {', '.join(ROWS)}, got {', '.join(sorted(unknown))}.")
    summary, found = None, None
    if FLAGS.schedule:
        found = pba.Schedule.load(FLAGS.schedule)
        # A search's own schedule.json: its summary sits next to it.
        beside = pathlib.Path(FLAGS.schedule).with_name(kd_keras.search.SUMMARY_FILE)
        if beside.exists():
            summary = json.loads(beside.read_text())
    elif "searched" in FLAGS.rows:
        out = FLAGS.search_out or tempfile.mkdtemp(prefix="rolewise_search_")
        summary = search_student_agent(out, search_data, search_teacher, **search_options)
        found = pba.Schedule.load(summary["schedule"])
    # Recipe configs: kd_keras.distill builds a fresh PBA map from one for
    # every run (a map holds its epoch).
    recipes = {
        "none": lambda: kd_keras.recipes.get("kd"),
        "hand": lambda: kd_keras.recipes.get("rolewise", {"policy": hand_set, **policy_options}),
        "searched": lambda: kd_keras.recipes.get("rolewise", {"policy": found, **policy_options}),
    }
    record = {
        "dataset": FLAGS.dataset,
        "settings": {name: setting(name) for name in DEFAULTS[FLAGS.dataset]},
        "seeds": FLAGS.seeds,
        "columns": columns,
        "results": {},
        "hand_set_policy": hand_set.to_json(),
        "schedule": None,
        "search": summary,
    }
    if FLAGS.json and pathlib.Path(FLAGS.json).exists():
        earlier = json.loads(pathlib.Path(FLAGS.json).read_text())
        if all(earlier.get(key) == record[key] for key in ("dataset", "settings", "seeds")):
            record.update({key: earlier.get(key) for key in ("results", "schedule", "search")})
    if found is not None:
        record["schedule"] = [[start, policy.to_json()] for start, policy in found.entries]
        record["schedule_epochs"] = found.epochs
    if summary is not None:
        record["search"] = summary
    results = {
        label: [record["results"][label][name]["per_seed"] for name in columns]
        for label in record["results"]
    }
    for key in FLAGS.rows:
        label, recipe = ROWS[key], recipes[key]()
        row_started = time.perf_counter()
        per_seed = [distil(teacher, bundle, recipe, seed) for seed in range(FLAGS.seeds)]
        results[label] = [list(column) for column in zip(*per_seed)]
        record["results"][label] = {
            name: {"per_seed": column, "mean": float(np.mean(column)), "std": float(np.std(column))}
            for name, column in zip(columns, results[label])
        }
        record["results"][label]["seconds"] = time.perf_counter() - row_started
        print(
            f"  {label:<22} "
            + " | ".join(
                f"{name.split()[0]} " + " ".join(f"{s:.2%}" for s in column)
                for name, column in zip(columns, results[label])
            ),
            flush=True,
        )

    def cell(scores):
        scores = 100 * np.array(scores)
        return f"{scores.mean():6.2f} ± {scores.std():4.2f}".rjust(15)

    header = f"{'student agent':<22} " + " ".join(f"{name:>15}" for name in columns)
    print()
    print(header)
    print("-" * len(header))
    for label in ROWS.values():
        if label in results:
            print(f"{label:<22} " + " ".join(cell(column) for column in results[label]))
    if summary is not None:
        print(
            f"\nSearch: population {summary['population']}, {summary['epochs']} epochs, "
            f"perturbation interval {summary['perturbation_interval']}, train "
            f"{summary['train_size']} / validation {summary['validation_size']}; "
            f"initial policies {FLAGS.initial_policy}; {summary['exploits']} exploits; "
            f"{summary['trial_epochs']} trial-epochs in {summary['wall_seconds']:.0f} s "
            f"wall = {summary['seconds_per_trial_epoch']:.2f} s per trial-epoch on 2 cores; "
            f"best validation accuracy {summary['best_validation_accuracy']:.2%}."
        )
    if found is not None:
        print(f"\nSearched schedule ({found.epochs} epochs, stretched to {setting('epochs')}):")
        print(describe(found))
    if FLAGS.dataset == "mnist1d":
        print("\nHand-set policy on one-row signals:")
        print(describe(pba.Schedule.constant(hand_set)))
    if FLAGS.plot and found is not None:
        plot_schedule(FLAGS.plot, found, summary)
    if FLAGS.json:
        pathlib.Path(FLAGS.json).write_text(json.dumps(record, indent=1) + "\n")


def population(summary):
    """Each trial's lineage from the search's Ray experiment: epochs, policy mass, reward."""
    experiment = pathlib.Path((summary or {}).get("experiment", ""))
    lineages = {}
    for directory in sorted(experiment.glob("trial_*")) if summary else []:
        trial_id = directory.name[len("trial_") :]
        results = [json.loads(line) for line in (directory / "result.json").open()]
        flat = json.loads((directory / "params.json").read_text())[kd_keras.search.pbt.POLICY]
        history = kd_keras.search.policy_history(experiment, trial_id, flat, summary["epochs"])
        schedule = pba.Schedule.from_history(history, epochs=summary["epochs"])
        epochs = np.arange(summary["epochs"])
        # Sum of the 30 entries' probabilities: how many ops an image is offered.
        mass = [
            schedule.policy_at(epoch).probabilities.sum() / pba.PARAMETER_MAX for epoch in epochs
        ]
        rewards = {r["training_iteration"]: r["validation_accuracy"] for r in results}
        lineages[trial_id] = (epochs, np.array(mass), rewards)
    return lineages


def plot_schedule(path, schedule, summary):
    """The best trial's schedule (each op's probability, magnitude) and the population's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.arange(schedule.epochs)
    policies = [schedule.policy_at(epoch) for epoch in epochs]
    probability = np.array([p.probabilities.sum(1) / pba.PARAMETER_MAX for p in policies])
    weights = np.array([p.probabilities for p in policies], "float64")
    magnitude = np.array(
        [
            (p.probabilities * p.magnitudes).sum(1) / np.maximum(p.probabilities.sum(1), 1)
            for p in policies
        ]
    )
    used = [i for i in range(len(pba.PBA_OPS)) if weights[:, i].any()]
    lineages = population(summary)
    panels = 4 if lineages else 2
    figure, axes = plt.subplots(panels, 1, figsize=(8, 3.2 * panels), sharex=True)
    top, bottom = axes[0], axes[1]
    colours = plt.get_cmap("tab20")
    for rank, i in enumerate(used):
        style = {
            "color": colours(rank % 20),
            "where": "post",
            "linestyle": "-" if pba.PBA_OPS[i] in ONE_ROW_OPS else "--",
        }
        top.step(epochs, probability[:, i], label=pba.PBA_OPS[i], **style)
        masked = np.where(probability[:, i] > 0, magnitude[:, i], np.nan)
        bottom.step(epochs, masked, **style)
    top.set_ylabel("probability\n(two copies summed)")
    bottom.set_ylabel("magnitude level (0-9)")
    title = "Searched student agent (best trial's schedule)"
    if summary is not None:
        title += (
            f"\npopulation {summary['population']}, {summary['epochs']} epochs, best "
            f"validation accuracy {summary['best_validation_accuracy']:.1%}"
        )
    if not used:
        top.text(
            0.5,
            0.5,
            "no augmentation at any epoch",
            ha="center",
            va="center",
            transform=top.transAxes,
        )
        bottom.set_ylim(0, 9)
    top.set_ylim(bottom=0)
    top.set_title(title, fontsize=10)
    if used:
        top.legend(fontsize=7, ncol=3, loc="upper left")
    if lineages:
        best = summary.get("best_trial")
        for rank, (trial_id, (trial_epochs, mass, rewards)) in enumerate(lineages.items()):
            style = {"color": colours(2 * rank % 20), "linewidth": 2.5 if trial_id == best else 1}
            label = trial_id.split("_")[-1] + (" (best)" if trial_id == best else "")
            axes[2].step(trial_epochs, mass, where="post", label=label, **style)
            done = sorted(rewards)
            axes[3].plot(done, [100 * rewards[e] for e in done], **style)
        axes[2].set_ylabel("policy mass per trial\n(sum of 30 probabilities)")
        axes[2].legend(fontsize=7, ncol=4, loc="upper left", title="trial", title_fontsize=7)
        axes[3].set_ylabel("validation accuracy (%)\n(the reward)")
    axes[-1].set_xlabel("search epoch (stretched to the run's length when distilling)")
    for axis in axes:
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


if __name__ == "__main__":
    app.run(main)
