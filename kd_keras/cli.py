"""The `kd-keras` command: distill, train-teacher, export. Thin: the jobs live in `kd_keras.run`."""

import shlex
import signal
import sys

from absl import app
from absl import flags
from absl import logging

COMMANDS = ("distill", "train-teacher", "train-vae", "export", "search")

USAGE = f"""kd-keras COMMAND [--flags]

Commands:
  distill        distil a teacher into a student with a recipe (default: the
                 shipped digits teacher -> MLP, recipe kd, offline)
  train-teacher  train a teacher with cross-entropy and save it with a card
  train-vae      train the VAE of the generative HARD augmenter, save it with a card
  export         export a saved student to SavedModel / TFLite with parity checks
  search         search a role-wise augmentation agent (PBA schedule) by
                 population-based training on Ray Tune (extra: kd_keras[search])

Run `kd-keras --helpfull` for every flag. Commands: {', '.join(COMMANDS)}.
"""

FLAGS = flags.FLAGS
flags.DEFINE_string("recipe", "kd", "Recipe name (see kd_keras.recipes.names()).")
flags.DEFINE_string("dataset", "digits", "'digits' or 'text-default' (embedded, offline) or 'tfds:NAME'.")
flags.DEFINE_string(
    "teacher", "shipped:digits_cnn", "Teacher: a .keras path, 'shipped:digits_cnn' or a zoo name."
)
flags.DEFINE_string("student", "mlp", "Student zoo name.")
flags.DEFINE_integer(
    "bits", None, "distill: DoReFa bits of the student's weights and activations "
    "(e.g. 2; default full precision); search: the bits of --model."
)
flags.DEFINE_string(
    "model", "cnn",
    "train-teacher: zoo name; export: path of the .keras student; search: zoo name of "
    "the network trained (default cnn for --role=teacher, mlp for --role=student).",
)
flags.DEFINE_integer("epochs", None, "Epochs (default: 30 on digits, else the recipe's).")
flags.DEFINE_integer("batch_size", None, "Batch size (default: the recipe's).")
flags.DEFINE_float("learning_rate", None, "Learning rate (default: the recipe's).")
flags.DEFINE_integer("seed", 0, "Seed of everything random.")
flags.DEFINE_integer("teacher_epochs", 30, "distill: epochs of a --teacher given as a zoo name.")
flags.DEFINE_string("out", None, "Run directory (distill, export) or .keras path (train-teacher).")
flags.DEFINE_list(
    "export", ["keras", "saved_model", "tflite"],
    "Export formats: keras, saved_model, tflite, tflite_float16, tflite_int8.",
)
flags.DEFINE_string("data_dir", None, "TFDS data directory.")
flags.DEFINE_enum(
    "download", "auto", ["auto", "yes", "no"],
    "TFDS download: auto = only when the servers are reachable.",
)
flags.DEFINE_integer("latent_dim", 16, "train-vae: size of the latent code.")
flags.DEFINE_enum(
    "role", "teacher", ["teacher", "student"],
    "search: the agent's role: teacher (trains --model with CE) or student "
    "(distils --model, default mlp, from the frozen --teacher).",
)
flags.DEFINE_integer("population", 16, "search: number of trials.")
flags.DEFINE_integer("perturbation_interval", 3, "search: epochs between exploit/explore steps.")
flags.DEFINE_integer(
    "train_size", None, "search: train on a fixed seeded subset of this many samples."
)
flags.DEFINE_bool("resume", False, "search: continue the search in --out (after a crash).")
flags.DEFINE_string(
    "policy", None,
    "PBA schedule JSON of role-wise KD: train-teacher's teacher agent, or distill's "
    "student agent (--recipe=rolewise).",
)
flags.DEFINE_multi_string("set", [], "Recipe override KEY=VALUE (repeatable), e.g. temperature=2.")
flags.DEFINE_enum(
    "strategy", "default", ["default", "mirrored", "multiworker"],
    "distill, train-teacher: tf.distribute strategy; multiworker reads TF_CONFIG.",
)
flags.DEFINE_integer(
    "cpu_devices", None,
    "Split the CPU into this many logical devices (replicas of --strategy=mirrored "
    "on a machine without GPUs; for testing, not speed).",
)
flags.DEFINE_enum(
    "precision", "float32", ["float32", "mixed_float16", "mixed_bfloat16"],
    "distill: the student's precision; train-teacher: the teacher's. Saved in float32.",
)
flags.DEFINE_enum(
    "teacher_precision", "float32", ["float32", "bfloat16", "float16"],
    "distill: precision of the frozen teacher's forward pass.",
)
flags.DEFINE_enum(
    "schedule", "adam", ["adam", "crd"],
    "train-teacher: adam (Adam 1e-3, cosine, 30 epochs) or crd (the CRD CIFAR-100 "
    "teacher recipe: SGD 0.05, x0.1 at 150/180/210 of 240 epochs, pad-crop-flip).",
)
flags.DEFINE_enum("verbose", "auto", ["auto", "0", "1", "2"], "Keras progress output.")
flags.DEFINE_bool(
    "deterministic", False,
    "distill: TensorFlow's deterministic ops, so reruns give identical weights on GPU "
    "too (slower there; ops without a deterministic kernel fail).",
)
flags.DEFINE_bool(
    "unsafe_deserialization", False,
    "Load .keras files that hold Python code (Lambda layers); only for files you trust.",
)


def main(argv):
    if len(argv) < 2 or argv[1] not in COMMANDS:
        given = argv[1] if len(argv) > 1 else "nothing"
        _fail(f"expected a command ({', '.join(COMMANDS)}), got {given}; see kd-keras --help.")
    if len(argv) > 2:
        _fail(f"unexpected arguments {' '.join(argv[2:])}: flags take the form --name=value.")
    logging.set_verbosity(logging.WARNING)
    from kd_keras import data as kd_data
    from kd_keras import faults
    from kd_keras import recipes
    from kd_keras import run
    from kd_keras import strategy as kd_strategy

    if FLAGS.cpu_devices:
        kd_strategy.split_cpu(FLAGS.cpu_devices)

    # The SavedModel and TFLite converters log every step at INFO.
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")

    download = {"auto": "auto", "yes": True, "no": False}[FLAGS.download]
    verbose = FLAGS.verbose if FLAGS.verbose == "auto" else int(FLAGS.verbose)
    try:
        if argv[1] == "distill":
            overrides = _overrides(FLAGS.set)
            if FLAGS.learning_rate is not None:
                overrides["learning_rate"] = FLAGS.learning_rate
            if FLAGS.policy is not None:
                if "policy" not in recipes.options(FLAGS.recipe):
                    _fail(
                        f"--policy is for recipes with a PBA policy (rolewise); recipe "
                        f"{FLAGS.recipe} has none: drop --policy or use --recipe=rolewise."
                    )
                overrides["policy"] = FLAGS.policy
            metrics = run.distill_job(
                recipe=FLAGS.recipe, dataset=FLAGS.dataset, teacher=FLAGS.teacher,
                student=FLAGS.student, epochs=FLAGS.epochs, batch_size=FLAGS.batch_size,
                seed=FLAGS.seed, out=FLAGS.out, export_formats=tuple(FLAGS.export),
                data_dir=FLAGS.data_dir, download=download, teacher_epochs=FLAGS.teacher_epochs,
                verbose=verbose, student_bits=FLAGS.bits, strategy=FLAGS.strategy,
                precision=FLAGS.precision, teacher_precision=FLAGS.teacher_precision,
                deterministic=FLAGS.deterministic,
                safe_mode=not FLAGS.unsafe_deserialization, **overrides,
            )
            print(summary(metrics))
        elif argv[1] == "train-teacher":
            card = run.train_teacher_job(
                model=FLAGS.model, dataset=FLAGS.dataset, epochs=FLAGS.epochs,
                batch_size=FLAGS.batch_size or 64, learning_rate=FLAGS.learning_rate,
                seed=FLAGS.seed, out=FLAGS.out, data_dir=FLAGS.data_dir, download=download,
                command=_command_line(), verbose=verbose, policy=FLAGS.policy,
                schedule=FLAGS.schedule, strategy=FLAGS.strategy, precision=FLAGS.precision,
            )
            print(_table([(key, card[key]) for key in sorted(card)]))
        elif argv[1] == "train-vae":
            card = run.train_vae_job(
                dataset=FLAGS.dataset, epochs=FLAGS.epochs or 100,
                batch_size=FLAGS.batch_size or 64, latent_dim=FLAGS.latent_dim,
                learning_rate=FLAGS.learning_rate or 1e-3, seed=FLAGS.seed,
                out=FLAGS.out or "runs/vae.keras", data_dir=FLAGS.data_dir, download=download,
                command=_command_line(), verbose=verbose,
            )
            print(_table([(key, card[key]) for key in sorted(card)]))
        elif argv[1] == "search":
            try:
                report = run.search_job(
                    role=FLAGS.role, dataset=FLAGS.dataset,
                    model=FLAGS.model if FLAGS["model"].present else None, bits=FLAGS.bits,
                    population=FLAGS.population, epochs=FLAGS.epochs,
                    perturbation_interval=FLAGS.perturbation_interval,
                    train_size=FLAGS.train_size, batch_size=FLAGS.batch_size or 64,
                    learning_rate=FLAGS.learning_rate, seed=FLAGS.seed, out=FLAGS.out,
                    resume=FLAGS.resume, data_dir=FLAGS.data_dir, download=download,
                    verbose=1 if verbose == "auto" else verbose,
                    **({"teacher": FLAGS.teacher, **_overrides(FLAGS.set)}
                       if FLAGS.role == "student" else {}),
                )
            except ImportError as error:  # the optional [search] extra
                _fail(str(error).splitlines()[0])
            print(_search_table(report))
        else:
            if not FLAGS.out:
                _fail("export needs --out=DIRECTORY for the exported files.")
            report = run.export_job(
                FLAGS.model, FLAGS.out, tuple(FLAGS.export), dataset=FLAGS.dataset,
                data_dir=FLAGS.data_dir, download=download,
                safe_mode=not FLAGS.unsafe_deserialization,
            )
            print(_export_table(report))
    except (
        run.RunError, kd_data.DataError, faults.NumericalFault, ValueError, TypeError, OSError,
    ) as error:
        _fail(str(error).splitlines()[0] if str(error) else type(error).__name__)
    except KeyboardInterrupt:
        resume = "; rerun the same command to resume from the last epoch checkpoint"
        print(
            f"kd-keras: interrupted{resume if argv[1] == 'distill' else ''}.", file=sys.stderr
        )
        sys.exit(130)


def _command_line():
    return " ".join(["kd-keras", *map(shlex.quote, sys.argv[1:])])


def _overrides(pairs):
    """Parse `--set KEY=VALUE` pairs: Python literals, else the text; `ValueError` if malformed."""
    import ast

    overrides = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        key = key.strip()
        if not separator or not key.isidentifier():
            raise ValueError(f"--set expects KEY=VALUE with a recipe option as KEY, got {pair!r}.")
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            overrides[key] = value
    return overrides


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def summary(metrics):
    """Format a distillation run's metrics as the table the command prints."""
    rows = [
        ("recipe", metrics["recipe"]),
        ("dataset", metrics["dataset"]),
        ("epochs", metrics["epochs"]),
        ("teacher accuracy", _percent(metrics["teacher_accuracy"])),
        ("student accuracy", _percent(metrics["student_accuracy"])),
        ("teacher-student agreement", _percent(metrics["agreement"])),
    ]
    if "teacher_accuracy_shifted" in metrics:
        rows += [
            ("teacher accuracy (shifted)", _percent(metrics["teacher_accuracy_shifted"])),
            ("student accuracy (shifted)", _percent(metrics["student_accuracy_shifted"])),
        ]
    rows += [
        ("teacher parameters", f"{metrics['teacher_parameters']:,}"),
        ("student parameters", f"{metrics['student_parameters']:,}"),
    ]
    if metrics.get("student_bits") is not None:
        rows.append(("student bits", metrics["student_bits"]))
    if metrics.get("replicas", 1) > 1:
        rows.append(("replicas", f"{metrics['replicas']} ({metrics['strategy']})"))
    if metrics.get("precision", "float32") != "float32":
        rows.append(("precision", metrics["precision"]))
    if metrics.get("teacher_precision", "float32") != "float32":
        rows.append(("teacher precision", metrics["teacher_precision"]))
    for name, report in metrics["exports"].items():
        rows.append((f"{name} size", f"{report['bytes'] / 1024:.1f} KiB"))
    rows += [
        ("wall time", f"{metrics['wall_seconds']:.1f} s"),
        ("run directory", metrics["out"]),
    ]
    return _table(rows)


def _export_table(report):
    rows = [
        (name, f"{r['bytes'] / 1024:.1f} KiB, max|diff| {r['max_abs_diff']:.2e}, "
               f"agreement {_percent(r['agreement'])}")
        for name, r in report.items()
    ]
    return _table(rows)


def _search_table(report):
    return _table([
        ("role", report["role"]),
        ("model", report["model"]),
        ("population", report["population"]),
        ("epochs", report["epochs"]),
        ("best trial", report["best_trial"]),
        ("best validation accuracy", _percent(report["best_validation_accuracy"])),
        ("trial-epochs", report["trial_epochs"]),
        ("exploits", report["exploits"]),
        ("wall time per trial-epoch", (
            f"{report['seconds_per_trial_epoch']:.2f} s"
            if report["seconds_per_trial_epoch"] is not None else "nothing left to train"
        )),
        ("schedule", report["schedule"]),
        ("ray experiment", report["experiment"]),
    ])


def _percent(value):
    return f"{100 * value:.2f}%"


def _table(rows):
    width = max(len(str(key)) for key, _ in rows)
    return "\n".join(f"{str(key):<{width}}  {value}" for key, value in rows)


def _fail(message):
    print(f"kd-keras: error: {message}", file=sys.stderr)
    sys.exit(2)


def run():
    """Console-script entry point of `kd-keras`."""
    # SIGTERM (a scheduler's stop) ends the run like Ctrl-C: the run
    # directory keeps its checkpoint and the message says how to resume.
    signal.signal(signal.SIGTERM, _interrupt)
    app.run(main, flags_parser=_parse)


def _parse(argv):
    if len(argv) > 1 and argv[1] in ("-h", "--help", "help"):
        print(USAGE)
        sys.exit(0)
    try:
        return FLAGS(argv)
    except flags.Error as error:
        _fail(str(error).splitlines()[0])


if __name__ == "__main__":
    run()
