"""The `kd-keras` command: one flag set per command. Thin: the jobs live in `kd_keras.jobs`.

`kd-keras COMMAND [--flags]` parses the flags after the command name with that
command's own `absl.flags.FlagValues`, so `kd-keras COMMAND --help` lists
exactly the flags the command takes and an unknown one is refused. Nothing
here imports TensorFlow before the flags are parsed (`kd_keras/__init__.py`
defers its imports in this process): `--help` and bad flags answer at once.
"""

import dataclasses
import pathlib
import shlex
import signal
import sys
from collections.abc import Callable

from absl import app
from absl import flags
from absl import logging as absl_logging

from kd_keras import cli_flags

PROGRAM = "kd-keras"
HELP = ("-h", "--help", "-help", "--helpfull", "--helpshort")


@dataclasses.dataclass(frozen=True)
class Command:
    """A `kd-keras` command: its one-line summary, its flags, and what it runs.

    Args:
        name: the command's name, e.g. `"distill"`.
        summary: one line for `kd-keras --help`.
        define: `define(flag_values)` defines the command's flags.
        run: `run(flag_values, command_line)` runs it with the parsed flags.
    """

    name: str
    summary: str
    define: Callable
    run: Callable

    def flag_values(self):
        """Return a fresh `FlagValues` holding this command's flags, unparsed."""
        flag_values = flags.FlagValues()
        self.define(flag_values)
        return flag_values

    def help(self):
        """Return the `--help` text: usage, summary and every flag with its help and default."""
        flag_values = self.flag_values()
        lines = [
            f"usage: {PROGRAM} {self.name} [--flag=value ...]",
            "",
            flags.text_wrap(self.summary, indent=""),
            "",
            "flags:",
        ]
        for name in sorted(flag_values):
            flag = flag_values[name]
            label = f"--[no]{name}" if flag.boolean else f"--{name}"
            lines.append(
                flags.text_wrap(f"{label}: {flag.help}", indent="      ", firstline_indent="  ")
            )
            # A flag without a default says in its help what happens instead.
            details = [] if flag.default in (None, []) else [f"default: {_shown_default(flag)}"]
            syntax = flag.parser.syntactic_help
            if syntax and not flag.boolean and flag.flag_type() != "enum":
                details.append(syntax)
            if details:
                lines.append(f"      ({'; '.join(details)})")
        return "\n".join(lines)


def _shown_default(flag):
    if flag.boolean:
        return str(flag.default).lower()
    if isinstance(flag.default, list):
        return ",".join(map(str, flag.default))
    return str(flag.default)


def _run_distill(values, command_line):
    from kd_keras import jobs
    from kd_keras import recipes

    overrides = _overrides(values.set)
    if values.learning_rate is not None:
        overrides["optimizer.learning_rate"] = values.learning_rate
    if values.hint:
        _add_hints(overrides, values.hint)
    if values.policy is not None:
        if not any("policy" in recipes.options(part) for part in values.recipe.split("+")):
            _fail(
                f"--policy is for recipes with a PBA policy (rolewise); recipe "
                f"{values.recipe} has none: drop --policy or use --recipe=rolewise."
            )
        overrides["policy"] = values.policy
    if values.print_config:
        config = recipes.get(
            values.recipe, overrides, teacher=jobs.zoo_name(values.teacher), student=values.student
        )
        print(recipes.to_json(config))
        return
    metrics = jobs.distill_job(
        recipe=values.recipe,
        dataset=values.dataset,
        teacher=values.teacher,
        student=values.student,
        epochs=values.epochs,
        batch_size=values.batch_size,
        seed=values.seed,
        out=values.out,
        export_formats=tuple(values.export),
        data_dir=values.data_dir,
        download=_download(values),
        teacher_epochs=values.teacher_epochs,
        verbose=_keras_verbose(values),
        student_bits=values.bits,
        strategy=values.strategy,
        precision=values.precision,
        teacher_precision=values.teacher_precision,
        deterministic=values.deterministic,
        safe_mode=not values.unsafe_deserialization,
        teacher_cache={"auto": "auto", "true": True, "false": False}[values.teacher_cache],
        allow_weak_teacher=values.allow_weak_teacher,
        **overrides,
    )
    print(summary(metrics))


def _run_train_teacher(values, command_line):
    from kd_keras import jobs

    card = jobs.train_teacher_job(
        model=values.model,
        dataset=values.dataset,
        epochs=values.epochs,
        batch_size=values.batch_size,
        learning_rate=values.learning_rate,
        seed=values.seed,
        out=values.out,
        data_dir=values.data_dir,
        download=_download(values),
        command=command_line,
        verbose=_keras_verbose(values),
        policy=values.policy,
        schedule=values.schedule,
        strategy=values.strategy,
        precision=values.precision,
        allow_weak_teacher=values.allow_weak_teacher,
    )
    print(_table([(key, card[key]) for key in sorted(card)]))


def _run_train_vae(values, command_line):
    from kd_keras import jobs

    card = jobs.train_vae_job(
        dataset=values.dataset,
        epochs=values.epochs,
        batch_size=values.batch_size,
        latent_dim=values.latent_dim,
        learning_rate=values.learning_rate,
        seed=values.seed,
        out=values.out,
        data_dir=values.data_dir,
        download=_download(values),
        command=command_line,
        verbose=_keras_verbose(values),
    )
    print(_table([(key, card[key]) for key in sorted(card)]))


def _run_search(values, command_line):
    from kd_keras import jobs

    out = values.out or str(jobs.default_out("search", values.role, values.dataset))
    if values.verbose in ("auto", "0"):
        print(
            f"Searching with {values.population} trials on Ray Tune into {out} (its progress: "
            "--verbose=1)."
        )
    try:
        report = jobs.search_job(
            role=values.role,
            dataset=values.dataset,
            model=values.model,
            bits=values.bits,
            teacher=values.teacher,
            population=values.population,
            epochs=values.epochs,
            perturbation_interval=values.perturbation_interval,
            train_size=values.train_size,
            batch_size=values.batch_size,
            learning_rate=values.learning_rate,
            seed=values.seed,
            out=out,
            resume=values.resume,
            data_dir=values.data_dir,
            download=_download(values),
            verbose=0 if values.verbose == "auto" else int(values.verbose),
            allow_weak_teacher=values.allow_weak_teacher,
            **_overrides(values.set),
        )
    except ImportError as error:  # the optional [search] extra
        _fail(str(error).splitlines()[0])
    print(_search_table(report))
    if report.get("rewards_all_equal"):
        print(
            f"{PROGRAM}: warning: every trial ended with the same reward "
            f"({_percent(report['final_rewards'][0])}): the search could not rank them, so "
            "its schedule is arbitrary; check that the network learns (more --epochs, "
            "its validation accuracy).",
            file=sys.stderr,
        )


def _run_export(values, command_line):
    from kd_keras import jobs

    if not values.model:
        _fail("export needs --model=PATH.keras, the student to export.")
    if not values.out:
        _fail("export needs --out=DIRECTORY for the exported files.")
    report = jobs.export_job(
        values.model,
        values.out,
        tuple(values.export),
        dataset=values.dataset,
        data_dir=values.data_dir,
        download=_download(values),
        safe_mode=not values.unsafe_deserialization,
    )
    print(_export_table(report))


COMMANDS = {
    command.name: command
    for command in (
        Command(
            "distill",
            "Distil a teacher into a student with a recipe (default: the shipped digits "
            "teacher -> MLP, recipe kd, offline) and export the student.",
            cli_flags.define_distill,
            _run_distill,
        ),
        Command(
            "train-teacher",
            "Train a teacher with cross-entropy and save it with a card.",
            cli_flags.define_train_teacher,
            _run_train_teacher,
        ),
        Command(
            "train-vae",
            "Train the VAE of the generative HARD augmenter and save it with a card.",
            cli_flags.define_train_vae,
            _run_train_vae,
        ),
        Command(
            "export",
            "Export a saved student to SavedModel / TFLite with parity checks.",
            cli_flags.define_export_command,
            _run_export,
        ),
        Command(
            "search",
            "Search a role-wise augmentation agent (a PBA schedule) by population-based "
            "training on Ray Tune (extra: kd_keras[search]).",
            cli_flags.define_search,
            _run_search,
        ),
    )
}


def usage():
    """Return the text of `kd-keras --help`: the commands and how to get their flags."""
    width = max(map(len, COMMANDS))
    lines = [f"usage: {PROGRAM} COMMAND [--flag=value ...]", "", "commands:"]
    for name, command in COMMANDS.items():
        lines.append(
            flags.text_wrap(
                command.summary, indent=" " * (width + 4), firstline_indent=f"  {name:<{width}}  "
            )
        )
    lines += ["", f"`{PROGRAM} COMMAND --help` lists a command's flags."]
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Parsed:
    """A parsed command line: the command and its parsed flags."""

    command: Command
    values: flags.FlagValues
    argv: tuple


def parse(argv):
    """Parse `kd-keras COMMAND [--flags]`; print help and exit 0, or exit 2 with one line.

    Args:
        argv: the whole command line, program name first.

    Returns:
        A `Parsed`.
    """
    if len(argv) < 2 or argv[1] in (*HELP, "help"):
        if len(argv) > 2 and argv[1] == "help" and argv[2] in COMMANDS:
            print(COMMANDS[argv[2]].help())
            sys.exit(0)
        if len(argv) < 2:
            print(usage(), file=sys.stderr)
            _fail(f"expected a command ({', '.join(COMMANDS)}).")
        print(usage())
        sys.exit(0)
    command = COMMANDS.get(argv[1])
    if command is None:
        _fail(f"expected a command ({', '.join(COMMANDS)}), got {argv[1]}; see {PROGRAM} --help.")
    arguments = list(argv[2:])
    if any(argument in HELP for argument in arguments):
        print(command.help())
        sys.exit(0)
    values = command.flag_values()
    try:
        rest = values([f"{PROGRAM} {command.name}", *arguments])
    except flags.Error as error:
        _fail(f"{str(error).splitlines()[0]} (see {PROGRAM} {command.name} --help)")
    if len(rest) > 1:
        _fail(f"unexpected arguments {' '.join(rest[1:])}: flags take the form --name=value.")
    return Parsed(command, values, tuple(argv))


def main(parsed):
    """Run a parsed command; our own errors end in one line `kd-keras: error: ...`, exit 2."""
    import kd_keras
    from kd_keras import quiet

    values = parsed.values
    verbose = values.verbose if "verbose" in values else "auto"
    if verbose == "3":
        quiet.show_native_logs()
    # Loading TensorFlow, LiteRT and the devices writes C++ lines past
    # TF_CPP_MIN_LOG_LEVEL (absl's InitializeLog warning, oneDNN, "Could not
    # find cuda drivers", cuInit on a GPU build without a GPU): held back,
    # replayed if loading fails, shown with --verbose=3.
    with quiet.native_stderr_captured():
        # What `import kd_keras` does outside this command (see kd_keras.import_all).
        kd_keras.import_all()
        import tensorflow as tf

        tf.config.list_physical_devices()
    from kd_keras import data as kd_data
    from kd_keras import export as kd_export
    from kd_keras import resolve
    from kd_keras.callbacks import faults

    if verbose != "3":
        # The SavedModel and TFLite converters log every step at INFO (absl's
        # logger and TensorFlow's).
        absl_logging.set_verbosity(absl_logging.WARNING)
        tf.get_logger().setLevel("ERROR")
    if "cpu_devices" in values and values.cpu_devices:
        from kd_keras import strategy as kd_strategy

        kd_strategy.split_cpu(values.cpu_devices)
    ours = (resolve.RunError, kd_data.DataError, faults.NumericalFault, kd_export.ParityError)
    try:
        parsed.command.run(values, _command_line(parsed.argv))
    except ours as error:
        _fail(_first_line(error))
    except (ValueError, TypeError) as error:
        if not _raised_by_kd_keras(error):
            raise  # a bug, ours or a library's: the traceback helps
        _fail(_first_line(error))
    except OSError as error:  # the machine's: a full disk, a permission
        _fail(_first_line(error))
    except KeyboardInterrupt as error:
        print(f"{PROGRAM}: {_interrupted(error, parsed.argv)}", file=sys.stderr)
        sys.exit(130)


def _interrupted(error, argv):
    """The one line for Ctrl-C: what was kept, and the exact command that resumes it."""
    out = getattr(error, "out", None)
    if out is None:
        return "interrupted; nothing was saved."
    if not error.kept:
        return f"interrupted before the first epoch checkpoint: nothing was saved and {out} was removed."
    rerun = _command_line([*_without_flag(argv, "out"), f"--out={out}"])
    if error.checkpoint_epoch is None:
        kept = f"the teacher it trained is kept in {out}"
    else:
        kept = f"the checkpoint of epoch {error.checkpoint_epoch} is kept in {out}"
    return f"interrupted; {kept}: rerun the same command to resume, or exactly: {rerun}"


def _without_flag(argv, name):
    kept, skip = [], False
    for argument in argv:
        if skip:
            skip = False
        elif argument in (f"--{name}", f"-{name}"):
            skip = True  # its value is the next argument
        elif not argument.startswith((f"--{name}=", f"-{name}=")):
            kept.append(argument)
    return kept


def _raised_by_kd_keras(error):
    # Our checks raise ValueError / TypeError with the fix in the message;
    # the same types raised inside Keras or TensorFlow are not ours to word.
    traceback = error.__traceback__
    while traceback is not None and traceback.tb_next is not None:
        traceback = traceback.tb_next
    if traceback is None:
        return False
    package = pathlib.Path(__file__).resolve().parent
    return package in pathlib.Path(traceback.tb_frame.f_code.co_filename).resolve().parents


def _first_line(error):
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _download(values):
    return {"auto": "auto", "yes": True, "no": False}[values.download]


def _keras_verbose(values):
    """Keras' verbosity for `--verbose`: auto is progress bars on a terminal only."""
    if values.verbose == "auto":
        return 1 if sys.stdout.isatty() else 2
    return min(int(values.verbose), 2)


def _command_line(argv):
    return " ".join([PROGRAM, *map(shlex.quote, argv[1:])])


def _overrides(pairs):
    """Parse `--set KEY=VALUE` pairs: Python literals, else the text; `ValueError` if malformed."""
    import ast

    overrides = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        key = key.strip()
        if not separator or not all(
            part.isidentifier() or part.isdigit() for part in key.split(".")
        ):
            raise ValueError(
                "--set expects KEY=VALUE with a recipe option or a (dotted) config "
                f"setting as KEY, e.g. temperature=2 or optimizer.learning_rate=0.1, got {pair!r}."
            )
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            overrides[key] = value
    return overrides


def _add_hints(overrides, hints):
    """Append `--hint` losses to the `extra_losses` of the overrides, and their weights."""
    losses, weights = [], []
    for hint in hints:
        parts = hint.split(":")
        weight = 1.0
        if len(parts) == 3:
            try:
                weight = float(parts.pop())
            except ValueError:
                parts = []
        if len(parts) != 2 or not all(part.strip() for part in parts):
            raise ValueError(
                "--hint expects TEACHER_LAYER:STUDENT_LAYER or TEACHER_LAYER:STUDENT_LAYER:WEIGHT, "
                f"e.g. --hint=global_average_pooling2d:dense:10, got {hint!r}."
            )
        losses.append(
            {
                "class_name": "HintDistillation",
                "teacher_layer_name": parts[0].strip(),
                "student_layer_name": parts[1].strip(),
            }
        )
        weights.append(weight)
    present = overrides.get("extra_losses") or []
    present_weights = overrides.get("extra_loss_weights")
    if not isinstance(present, list) or not (
        present_weights is None or isinstance(present_weights, list)
    ):
        raise ValueError(
            "--hint adds to lists: --set extra_losses=[...] and extra_loss_weights=[...] "
            f"must be lists, got {present!r} and {present_weights!r}."
        )
    if present_weights is None:
        present_weights = [1.0] * len(present)
    overrides["extra_losses"] = [*present, *losses]
    overrides["extra_loss_weights"] = [*present_weights, *weights]


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
    cache = metrics.get("teacher_cache")
    if cache:
        rows.append(
            (
                "teacher cache",
                f"{cache['samples'] + cache.get('validation_samples', 0):,} x {cache['classes']} "
                f"{cache['dtype']} logits, {cache['bytes'] / 2**20:.1f} MiB",
            )
        )
    for name, report in metrics["exports"].items():
        rows.append((f"{name} size", f"{report['bytes'] / 1024:.1f} KiB"))
    rows += [
        ("wall time", f"{metrics['wall_seconds']:.1f} s"),
        ("run directory", metrics["out"]),
    ]
    return _table(rows)


def _export_table(report):
    rows = [
        (
            name,
            f"{r['bytes'] / 1024:.1f} KiB, max|diff| {r['max_abs_diff']:.2e}, "
            f"agreement {_percent(r['agreement'])}",
        )
        for name, r in report.items()
    ]
    return _table(rows)


def _search_table(report):
    return _table(
        [
            ("role", report["role"]),
            ("model", report["model"]),
            ("population", report["population"]),
            ("epochs", report["epochs"]),
            ("best trial", report["best_trial"]),
            ("best validation accuracy", _percent(report["best_validation_accuracy"])),
            ("final rewards", _rewards(report)),
            ("trial-epochs", report["trial_epochs"]),
            ("exploits", report["exploits"]),
            (
                "wall time per trial-epoch",
                (
                    f"{report['seconds_per_trial_epoch']:.2f} s"
                    if report["seconds_per_trial_epoch"] is not None
                    else "nothing left to train"
                ),
            ),
            ("schedule", report["schedule"]),
            ("ray experiment", report["experiment"]),
        ]
    )


def _rewards(report):
    rewards = report.get("final_rewards")
    if not rewards:
        return "not recorded"
    if report.get("rewards_all_equal"):
        return f"all equal ({_percent(rewards[0])}): the schedule is arbitrary"
    return f"{_percent(rewards[0])} to {_percent(rewards[-1])} over {len(rewards)} trials"


def _percent(value):
    return f"{100 * value:.2f}%"


def _table(rows):
    width = max(len(str(key)) for key, _ in rows)
    return "\n".join(f"{str(key):<{width}}  {value}" for key, value in rows)


def _fail(message):
    print(f"{PROGRAM}: error: {message}", file=sys.stderr)
    sys.exit(2)


def _parse_for_absl(argv):
    # absl's own flags (logging) are parsed empty: they are not ours to offer.
    flags.FLAGS(argv[:1])
    return parse(argv)


def run():
    """Console-script entry point of `kd-keras`."""
    # SIGTERM (a scheduler's stop) ends the run like Ctrl-C: the run
    # directory keeps its checkpoint and the message says how to resume.
    signal.signal(signal.SIGTERM, _interrupt)
    app.run(main, flags_parser=_parse_for_absl)


if __name__ == "__main__":
    run()
