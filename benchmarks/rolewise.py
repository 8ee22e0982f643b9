"""Benchmark: role-wise KD's searched student agent vs a hand-set policy vs no augmentation.

The setting of Fu et al. (arXiv:2004.08861, METHODS.md §6) at CPU scale on
the embedded digits: the shipped full-precision CNN teacher and a low-bit
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

Usage:
    PYTHONPATH=. python benchmarks/rolewise.py        # population 4, 6 search epochs, 20 epochs, 3 seeds
    PYTHONPATH=. python benchmarks/rolewise.py --population=2 --search_epochs=2 --epochs=2 --seeds=1
"""

import json
import os
import pathlib
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

import kd_keras  # noqa: E402
from kd_keras.augment import pba  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("epochs", 20, "Distillation epochs of every row.")
flags.DEFINE_integer("seeds", 3, "Seeds per row (mean ± std).")
flags.DEFINE_string("student", "mlp", "Student zoo name.")
flags.DEFINE_integer("bits", 2, "Bits of the student's weights and activations (DoReFa).")
flags.DEFINE_integer("population", 4, "Search: trials.")
flags.DEFINE_integer("search_epochs", 6, "Search: epochs of every trial.")
flags.DEFINE_integer("perturbation_interval", 1, "Search: epochs between exploit/explore.")
flags.DEFINE_enum(
    "initial_policy", "zeros", ["zeros", "random"],
    "Search: trials start without augmentation (PBA) or from random policies.",
)
flags.DEFINE_integer("train_size", 1000, "Search: training subset (the rest of 80% unused).")
flags.DEFINE_string("search_out", None, "Search directory (default: a temporary one).")
flags.DEFINE_string("schedule", None, "Use this schedule JSON instead of searching.")


def accuracy(model, data):
    return kd_keras.resolve.evaluate(model, data)


def distil(teacher, bundle, recipe, seed):
    keras.utils.set_random_seed(seed)
    student = kd_keras.models.get(
        FLAGS.student, bundle.input_shape, bundle.num_classes, bits=FLAGS.bits
    )
    distiller = kd_keras.distill(
        teacher, student, bundle.train, recipe=recipe, epochs=FLAGS.epochs, seed=seed,
        verbose=0,
    )
    return accuracy(distiller.student, bundle.test), accuracy(distiller.student, bundle.test_shifted)


def search_student_agent(out):
    kd_keras.search.search(
        role="student", dataset="digits", model=FLAGS.student, bits=FLAGS.bits,
        teacher="shipped:digits_cnn", population=FLAGS.population,
        epochs=FLAGS.search_epochs, perturbation_interval=FLAGS.perturbation_interval,
        train_size=FLAGS.train_size, initial_policy=FLAGS.initial_policy, seed=0, out=out,
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
    bundle = kd_keras.data.load_digits()
    teacher = kd_keras.resolve.resolve_teacher("shipped:digits_cnn", bundle)
    print(
        f"digits: teacher {accuracy(teacher, bundle.test):.2%} test accuracy, "
        f"{accuracy(teacher, bundle.test_shifted):.2%} shifted; student {FLAGS.student} "
        f"at {FLAGS.bits} bits; {FLAGS.epochs} epochs; {FLAGS.seeds} seed(s); "
        f"train {len(bundle.train[1])}",
        flush=True,
    )
    summary = None
    if FLAGS.schedule:
        found = pba.Schedule.load(FLAGS.schedule)
    else:
        out = FLAGS.search_out or tempfile.mkdtemp(prefix="rolewise_search_")
        summary = search_student_agent(out)
        found = pba.Schedule.load(summary["schedule"])
    # Recipe configs: kd_keras.distill builds a fresh PBA map from one for
    # every run (a map holds its epoch).
    rows = [
        ("KD, no augmentation", kd_keras.recipes.get("kd")),
        ("KD + hand-set policy", kd_keras.recipes.get("rolewise")),
        ("KD + searched agent", kd_keras.recipes.get("rolewise", {"policy": found})),
    ]
    results = {}
    for label, recipe in rows:
        clean, shifted = [], []
        for seed in range(FLAGS.seeds):
            scores = distil(teacher, bundle, recipe, seed)
            clean.append(scores[0])
            shifted.append(scores[1])
        results[label] = (clean, shifted)
        print(f"  {label:<22} clean " + " ".join(f"{s:.2%}" for s in clean)
              + " | shifted " + " ".join(f"{s:.2%}" for s in shifted), flush=True)

    def cell(scores):
        scores = 100 * np.array(scores)
        return f"{scores.mean():6.2f} ± {scores.std():4.2f}".rjust(15)

    header = f"{'student agent':<22} {'acc (%)':>15} {'shifted (%)':>15}"
    print()
    print(header)
    print("-" * len(header))
    for label, _ in rows:
        clean, shifted = results[label]
        print(f"{label:<22} {cell(clean)} {cell(shifted)}")
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
    print(f"\nSearched schedule ({found.epochs} epochs, stretched to {FLAGS.epochs}):")
    print(describe(found))


if __name__ == "__main__":
    app.run(main)
