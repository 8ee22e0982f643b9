"""The `kd-keras` command: distill, train-teacher, export. Thin: the jobs live in `kd_keras.run`."""

import shlex
import sys

from absl import app
from absl import flags
from absl import logging

COMMANDS = ("distill", "train-teacher", "train-vae", "export")

USAGE = f"""kd-keras COMMAND [--flags]

Commands:
  distill        distil a teacher into a student with a recipe (default: the
                 shipped digits teacher -> MLP, recipe kd, offline)
  train-teacher  train a teacher with cross-entropy and save it with a card
  train-vae      train the VAE of the generative HARD augmenter, save it with a card
  export         export a saved student to SavedModel / TFLite with parity checks

Run `kd-keras --helpfull` for every flag. Commands: {', '.join(COMMANDS)}.
"""

FLAGS = flags.FLAGS
flags.DEFINE_string("recipe", "kd", "Recipe name (see kd_keras.recipes.names()).")
flags.DEFINE_string("dataset", "digits", "'digits' or 'text-default' (embedded, offline) or 'tfds:NAME'.")
flags.DEFINE_string(
    "teacher", "shipped:digits_cnn", "Teacher: a .keras path, 'shipped:digits_cnn' or a zoo name."
)
flags.DEFINE_string("student", "mlp", "Student zoo name.")
flags.DEFINE_string("model", "cnn", "train-teacher: zoo name; export: path of the .keras student.")
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
flags.DEFINE_multi_string("set", [], "Recipe override KEY=VALUE (repeatable), e.g. temperature=2.")
flags.DEFINE_enum("verbose", "auto", ["auto", "0", "1", "2"], "Keras progress output.")


def main(argv):
    if len(argv) < 2 or argv[1] not in COMMANDS:
        given = argv[1] if len(argv) > 1 else "nothing"
        _fail(f"expected a command ({', '.join(COMMANDS)}), got {given}; see kd-keras --help.")
    if len(argv) > 2:
        _fail(f"unexpected arguments {' '.join(argv[2:])}: flags take the form --name=value.")
    logging.set_verbosity(logging.WARNING)
    from kd_keras import data as kd_data
    from kd_keras import run

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
            metrics = run.distill_job(
                recipe=FLAGS.recipe, dataset=FLAGS.dataset, teacher=FLAGS.teacher,
                student=FLAGS.student, epochs=FLAGS.epochs, batch_size=FLAGS.batch_size,
                seed=FLAGS.seed, out=FLAGS.out, export_formats=tuple(FLAGS.export),
                data_dir=FLAGS.data_dir, download=download, teacher_epochs=FLAGS.teacher_epochs,
                verbose=verbose, **overrides,
            )
            print(summary(metrics))
        elif argv[1] == "train-teacher":
            card = run.train_teacher_job(
                model=FLAGS.model, dataset=FLAGS.dataset, epochs=FLAGS.epochs or 30,
                batch_size=FLAGS.batch_size or 64, learning_rate=FLAGS.learning_rate or 1e-3,
                seed=FLAGS.seed, out=FLAGS.out, data_dir=FLAGS.data_dir, download=download,
                command=_command_line(), verbose=verbose,
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
        else:
            if not FLAGS.out:
                _fail("export needs --out=DIRECTORY for the exported files.")
            report = run.export_job(
                FLAGS.model, FLAGS.out, tuple(FLAGS.export), dataset=FLAGS.dataset,
                data_dir=FLAGS.data_dir, download=download,
            )
            print(_export_table(report))
    except (run.RunError, kd_data.DataError, ValueError, TypeError) as error:
        _fail(str(error).splitlines()[0])


def _command_line():
    return " ".join(["kd-keras", *map(shlex.quote, sys.argv[1:])])


def _overrides(pairs):
    import ast

    overrides = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key:
            _fail(f"--set expects KEY=VALUE, got {pair!r}.")
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value
    return overrides


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
