"""Device check: every recipe's KD step on this machine's accelerator, timed, with XLA verified.

One command that proves a GPU run (issue 18). On the first GPU if there is
one, else on the CPU, it builds a teacher -> student pair (default
`resnet56 -> resnet20`, CIFAR-100 shaped: 32x32x3, 100 classes; the teacher
is randomly initialised, since this times steps and does not train to
accuracy) and, for every recipe of `kd_keras.recipes.names()`, every
precision (float32 and a mixed policy: `mixed_float16` on a GPU,
`mixed_bfloat16` otherwise) and XLA off and on (the recipe config's
`jit_compile` key), compiles the recipe's training step. Each recipe's steps
are then timed together with the teacher's forward passes in interleaved
rounds, as `benchmarks/step_time.py` and `benchmarks/scale.py` do (whose
helpers this reuses): machine noise hits every candidate of a round alike,
and ratios are paired within each round, then the median and quartiles
over rounds; the recipe's compiled steps are freed before the next recipe is
compiled. It prints one row per recipe, phase (the augmenter phase of a
recipe with a learnable augmenter is a row of its own), precision and XLA
setting:

- img/s and step ms: input images per training step / the step's median time.
  Steps are fed by `kd_keras.data.pipeline` (shuffle, the recipe's host
  augmentation such as rolewise's PBA policy, batch, prefetch) over synthetic
  CIFAR-shaped images made in memory with NumPy (uniform in [0, 1), no
  download), as a real run is fed, so the epoch estimate includes the input
  pipeline.
- XLA: what happened, verified, not what was asked (see below).
- peak MiB: `tf.config.experimental.get_memory_info('GPU:0')['peak']` over the
  candidate's timed steps (the statistics are reset before each of its
  blocks); on a CPU "n/a", and the process' peak RSS (`resource.getrusage`)
  is printed under the table, since it cannot be split per candidate.
- teacher share: the time of the teacher's forward pass on one batch of the
  same data (float32, same XLA setting) divided by the step's time, paired
  per round. It is one forward pass: a step that runs the teacher on two
  views (mixup's clean and mixed batches) spends about twice that on it.
- compile s: the first call of the step (tracing, plus XLA compilation when on).

How XLA compilation is verified. Keras silently turns XLA off for the whole
model when one layer says it does not support it (`supports_jit = False`:
"Model doesn't support `jit_compile=True`. Proceeding with
`jit_compile=False`"), and a config key that is not passed on would do the
same. A row with XLA asked for says `compiled` only when all three hold:

1. Keras kept it: `distiller.jit_compile` is True after compile and after
   the step was made, and no "doesn't support `jit_compile=True`" warning
   was raised (both captured around compile and tracing);
2. the graph says so: every Keras step function traced for the candidate
   (the functions named `__inference_one_step_on_data_*` that appeared in the
   eager context, one per phase) carries `_XlaMustCompile = True`, the
   attribute `tf.function(jit_compile=True)` sets. Must-compile means
   TensorFlow compiles the function with XLA or raises: it has no silent
   fallback of its own;
3. the step ran: its first call (where XLA compiles it) returned.

The function names and definitions are read through TensorFlow's private
eager context (`list_function_names`, `get_function_def`); if Keras renames
its step function, no step is found and the row says `UNVERIFIED`, which
fails the check rather than passing it unproven. A row with XLA off is
checked the same way (the step must not carry `_XlaMustCompile`).

Exit status ("fail loudly"). The command exits with 1 and says why on stderr
when any row:
- fell back silently (`FALLBACK`) or could not be verified (`UNVERIFIED`), on
  any device, including `--quick` on a CPU in CI: that is exactly what the
  check exists to catch;
- failed outside XLA (`error`: the step crashes with XLA off too, or the
  recipe cannot be built for a reason other than the data's shape);
- failed to compile with XLA (`XLA error: <ops> on <device>`, an explicit
  error raised by TensorFlow) on a GPU or TPU, where `jit_compile="auto"`
  turns XLA on and a real run of the recipe would crash.
An explicit XLA error on a CPU is a reported row and does not fail the
command: there `jit_compile="auto"` keeps XLA off, and XLA's CPU backend lacks
kernels the GPU has (STACK.md: ImageProjectiveTransformV3,
StatelessRandomGammaV3), so the table saying so is the finding. A recipe
that does not apply to the data (e.g. `hard_vae`, whose shipped VAE is the
digits VAE: the Distiller refuses the shape with a ValueError when it is
built) is one row `n/a: <reason>` and does not fail the command.

Time. On one GPU the defaults (all recipes, 2 precisions, XLA off and on, 4
rounds x 50 steps, batch 64) are meant to finish in under 5 minutes (not yet
measured on a GPU). Tracing and compiling the 40 steps is a fixed cost, so
`--budget_minutes=5` gives each recipe its share of what is left after the
compilation still expected (the mean so far), cuts its steps per round when
they would not fit, and says so above the table (the `steps` column shows
rounds x steps); 0 never cuts. On this project's shared, busy 2-core CPU
compiling took 12 minutes or more (kd's resnet56 -> resnet20 step: 0.5-0.8 s,
0.7-1.8 s with XLA, in two runs), so there the cut leaves one step per round.

`--quick` (for CI on a CPU, about 30 s): the recipes kd and mixup (plain KD,
and an in-step augmenter drawing Beta samples, with which Keras' own MixUp
cannot compile on a CPU: STACK.md), the
tiny `cnn -> small_cnn` pair on the same CIFAR-shaped data, batch 8, 3
rounds x 2 steps, 64 images, both precisions, XLA off and on, no budget
cut (a loaded CI runner must not change what runs). It checks the
machinery (building, XLA verification, timing, the table, the exit status),
not the speed of the real pair. Flags given explicitly win over `--quick`.

`--epochs_estimate` adds the projected wall time of training on CIFAR-100
(50,000 images per epoch, `ceil(50000 / batch)` steps) at the measured step
times, per recipe, precision and XLA: for the 240-epoch CRD schedule, and for
the recipe's own number of epochs where it differs (funmatch's patient 1200).
A recipe alternating phases every few steps runs at its student/augmenter
step ratio; one with augmenter epochs (tst) adds or swaps those epochs as
`kd_keras.recipes.build` does. Evaluation is not included.

    python benchmarks/device_check.py                       # resnet56 -> resnet20, everything
    python benchmarks/device_check.py --quick               # CI smoke test on a CPU
    python benchmarks/device_check.py --epochs_estimate --recipes=kd,cutmix_pick --jit=on
"""

import gc
import math
import os
import re
import resource
import statistics
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import scale  # noqa: E402  (its flags: --recipes --replicas; --replicas is unused here)
import step_time  # noqa: E402  (its flags: --student --batch_size --steps --rounds --jit)
import tensorflow as tf  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
from tensorflow.python.eager import context  # noqa: E402  (private: see the docstring)

import kd_keras  # noqa: E402
from kd_keras import precision as kd_precision  # noqa: E402
from kd_keras.recipes import blocks  # noqa: E402
from kd_keras.recipes import build  # noqa: E402

flags.DEFINE_string("teacher", "resnet56", "Teacher zoo name (randomly initialised).")
flags.DEFINE_list(
    "precisions",
    [],
    "Student dtype policies; empty: float32 and mixed_float16 on a GPU, mixed_bfloat16 otherwise.",
)
flags.DEFINE_integer("images", 512, "Synthetic images the input pipeline cycles through.")
flags.DEFINE_float(
    "budget_minutes",
    5.0,
    "Cut the steps per round so the run ends within this many minutes (0: never cut).",
)
flags.DEFINE_bool("quick", False, "CI smoke configuration (see the module docstring).")
flags.DEFINE_bool(
    "epochs_estimate",
    False,
    "Also print the projected wall time of CIFAR-100 training (240 epochs, and the recipe's own).",
)
FLAGS = flags.FLAGS
# The full check by default: every recipe, the CIFAR-100 pair, the recipes' batch.
FLAGS.set_default("recipes", kd_keras.recipes.names())
FLAGS.set_default("student", "resnet20")
FLAGS.set_default("batch_size", 64)
FLAGS.set_default("steps", 50)
FLAGS.set_default("rounds", 4)

QUICK = {
    "recipes": ["kd", "mixup"],
    "teacher": "cnn",
    "student": "small_cnn",
    "batch_size": 8,
    "steps": 2,
    "rounds": 3,
    "images": 64,
    # CI's own timeout governs; a loaded runner must not change what is run.
    "budget_minutes": 0.0,
}
SHAPE = (32, 32, 3)
CLASSES = 100
CIFAR_TRAIN_IMAGES = 50_000
# Keras' words when it turns XLA off for a model (keras.src.trainers.trainer).
KERAS_FALLBACK = "doesn't support `jit_compile=True`"
# The Keras step function's name in the TF backend's trainer.
KERAS_STEP = "one_step_on_data"
_UNSUPPORTED = re.compile(
    r"Detected unsupported operations when trying to compile graph \S+ on (\S+): (.*?) \(No"
)


class Candidate:
    """One compiled (recipe, precision, XLA) configuration, or why there is none.

    Args:
        recipe: the recipe's name.
        precision: the student's dtype policy.
        jit: whether XLA was asked for.
    """

    def __init__(self, recipe, precision, jit):
        self.recipe = recipe
        self.precision = precision
        self.jit = jit
        self.config = None
        self.steps = {}  # phase -> callable running one training step, until timed
        self.results = {}  # phase -> median seconds, teacher share, peak bytes, steps
        self.xla = None  # what the verification found
        self.failed = False  # whether this row fails the command
        self.compile_seconds = None


def xla_verdict(requested, keras_jit, warning, step_flags):
    """Say whether a step really ran with the XLA setting it asked for.

    Args:
        requested: whether XLA was asked for.
        keras_jit: `distiller.jit_compile` once the step was made.
        warning: Keras' fallback warning if one was raised, else None.
        step_flags: `_XlaMustCompile` of each Keras step function traced for
            the candidate (one per phase).

    Returns:
        `(status, failed)`: `"compiled"` or `"off"` when verified, else a
        reason starting with `FALLBACK`, `UNVERIFIED` or `MISMATCH`, and
        whether that fails the check.
    """
    if not step_flags:
        return f"UNVERIFIED: no Keras step function ({KERAS_STEP}) was traced", True
    if not requested:
        if any(step_flags):
            return "MISMATCH: XLA off was asked, the step carries _XlaMustCompile", True
        return "off", False
    reasons = []
    if warning is not None:
        reasons.append(f"Keras warned {warning!r}")
    if not keras_jit:
        reasons.append("distiller.jit_compile is False")
    if not all(step_flags):
        reasons.append("the step was traced without _XlaMustCompile")
    if reasons:
        return "FALLBACK: " + "; ".join(reasons), True
    return "compiled", False


def explain_error(error, requested):
    """A one-line row status for an exception raised building or running a step.

    Args:
        error: the exception.
        requested: whether XLA was asked for.

    Returns:
        `"XLA error: <ops> on <XLA device>"` for TensorFlow's refusal to
        compile ops with XLA, else `"error: <type>: <first line>"`.
    """
    message = str(error)
    found = _UNSUPPORTED.search(message)
    if requested and found:
        return f"XLA error: {found.group(2)} on {found.group(1)}"
    if requested and ("tf2xla" in message or "XLA" in message):
        return "XLA error: " + _first_line(message)
    return f"error: {type(error).__name__}: {_first_line(message)}"


def _first_line(message):
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    # TensorFlow's "Graph execution error:" heads the interesting line.
    lines = [line for line in lines if line != "Graph execution error:"] or ["?"]
    return lines[0][:160]


def _must_compile_flags(names, function_name):
    """`_XlaMustCompile` of each traced function named `__inference_<function_name>_*`."""
    found = []
    eager = context.context()
    for name in sorted(names):
        if not name.startswith(f"__inference_{function_name}_"):
            continue
        attributes = eager.get_function_def(name).attr
        found.append("_XlaMustCompile" in attributes and attributes["_XlaMustCompile"].b)
    return found


def _function_names():
    return set(context.context().list_function_names())


def synthetic_data(count, seed=0):
    """CIFAR-shaped images uniform in [0, 1) and integer labels of `CLASSES` classes."""
    rng = np.random.default_rng(seed)
    x = rng.random((count, *SHAPE), dtype=np.float32)
    y = rng.integers(0, CLASSES, size=count).astype("int32")
    return x, y


def compile_candidate(candidate, teacher, names, source, batch_size, iterators):
    """Build, compile and trace one candidate's step(s), and verify its XLA setting.

    Fills `candidate.steps`, `.xla`, `.failed` and `.compile_seconds`. A
    ValueError raised while the Distiller is built means the recipe does not
    apply to these models or data (`n/a`); any other exception is reported
    in the row.

    Args:
        candidate: the `Candidate` to fill.
        teacher: the frozen teacher, shared by every candidate.
        names: the teacher's and the student's zoo names (some recipes'
            settings depend on the pair).
        source: the unbatched `tf.data.Dataset` of synthetic `(x, y)` pairs.
        batch_size: images per step.
        iterators: the input iterators made so far, by host augmentation:
            candidates with the same one share an iterator (each iterator
            costs memory, threads and about a second to tear down).
    """
    teacher_name, student_name = names
    config = kd_keras.recipes.get(
        candidate.recipe,
        {"jit_compile": candidate.jit},
        teacher=teacher_name,
        student=student_name,
    )
    candidate.config = config
    keras.utils.set_random_seed(0)
    with kd_precision.policy(candidate.precision):
        student = kd_keras.models.get(student_name, SHAPE, CLASSES)
    try:
        distiller = build.distiller(config, teacher, student)
    except ValueError as error:
        candidate.xla = f"n/a: {_first_line(str(error))}"
        return
    iterator = iterators.get(repr(config.get("host_augment")))
    if iterator is None:
        # drop_remainder: one batch shape, so XLA compiles once.
        iterator = iter(
            kd_keras.data.pipeline(
                source,
                batch_size,
                training=True,
                augment=build.host_augment(config),
                cache=False,
                drop_remainder=True,
            ).repeat()
        )
        iterators[repr(config.get("host_augment"))] = iterator

    before = _function_names()
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            build.compile(
                distiller,
                config,
                steps_per_epoch=math.ceil(CIFAR_TRAIN_IMAGES / batch_size),
                epochs=config["epochs"],
            )
            # Traces and runs each phase's step once: XLA compiles it here.
            candidate.steps = scale._steps(
                distiller, tf.distribute.get_strategy(), lambda _: iterator
            )
        except Exception as error:  # noqa: BLE001 (every failure is a row of the table)
            candidate.xla = explain_error(error, candidate.jit)
            candidate.failed = not candidate.xla.startswith("XLA error") or _accelerated()
            candidate.steps = {}
            return
    candidate.compile_seconds = time.perf_counter() - started
    warning = None
    for caught_warning in caught:
        if KERAS_FALLBACK in str(caught_warning.message):
            warning = str(caught_warning.message)
        else:  # recorded only to find the fallback: show the others as usual
            warnings.showwarning(
                caught_warning.message,
                caught_warning.category,
                caught_warning.filename,
                caught_warning.lineno,
            )
    flags_found = _must_compile_flags(_function_names() - before, KERAS_STEP)
    candidate.xla, candidate.failed = xla_verdict(
        candidate.jit, bool(distiller.jit_compile), warning, flags_found
    )


def teacher_forward(teacher, batch, jit):
    """A compiled teacher forward pass on `batch`, its XLA setting verified; `(step, status, failed)`."""

    def forward_pass(inputs):
        return teacher(inputs, training=False)

    forward = tf.function(forward_pass, jit_compile=jit)
    before = _function_names()
    forward(batch)
    flags_found = _must_compile_flags(_function_names() - before, "forward_pass")
    status = "compiled" if jit else "off"
    if flags_found != [jit]:
        status = f"MISMATCH: _XlaMustCompile {flags_found}, asked {jit}"
    return (lambda: forward(batch)), status, status not in ("compiled", "off")


def _accelerated():
    return any(device.device_type != "CPU" for device in tf.config.list_physical_devices())


def _device():
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None, f"CPU ({os.cpu_count()} cores)"
    details = tf.config.experimental.get_device_details(gpus[0])
    return "GPU:0", f"GPU:0 {details.get('device_name', '')} of {len(gpus)} GPU(s)"


def _apply_quick():
    for name, value in QUICK.items():
        if not FLAGS[name].present:
            setattr(FLAGS, name, value)


def _steps_per_round(started, warm, compiling_after, groups_after):
    """The steps per round of one recipe's group that fit `--budget_minutes`, and why if cut.

    Args:
        started: `time.perf_counter()` when the run started.
        warm: seconds of one step of each of the group's timed candidates.
        compiling_after: seconds the later groups are expected to spend compiling.
        groups_after: how many groups come after this one.

    Returns:
        `(steps, note)`: `--steps`, or fewer so this group takes its share of
        what is left of the budget; `note` says so, or is None.
    """
    steps = FLAGS.steps
    if FLAGS.budget_minutes <= 0:
        return steps, None
    # A margin for printing and for freeing the compiled steps of the last group.
    left = FLAGS.budget_minutes * 60 - (time.perf_counter() - started) - compiling_after - 10
    per_step = sum(warm)
    # Each timed block runs one untimed step first (step_time._time).
    fitting = int(left / (groups_after + 1) / (FLAGS.rounds * per_step)) - 1
    if fitting >= steps:
        return steps, None
    fitted = max(1, fitting)
    return fitted, (
        f"--steps cut from {steps} to {fitted} per round to fit --budget_minutes="
        f"{FLAGS.budget_minutes:g}: one step of each of the {len(warm)} timed candidates "
        f"takes {per_step:.2f} s" + ("; compiling spent the budget" if fitting < 1 else "")
    )


def _time_group(timed, steps, memory_device):
    """Time the steps of `timed` (key -> step) in interleaved rounds; `(times, peaks)` by key."""
    times = {key: [] for key in timed}
    peaks = {key: 0 for key in timed}
    for _ in range(FLAGS.rounds):
        for key, step in timed.items():
            if memory_device:
                tf.config.experimental.reset_memory_stats(memory_device)
            times[key].append(step_time._time(step, steps))
            if memory_device:
                peaks[key] = max(
                    peaks[key], tf.config.experimental.get_memory_info(memory_device)["peak"]
                )
    return times, peaks


def projected_hours(config, times, batch_size, epochs):
    """Wall hours of `epochs` student epochs of CIFAR-100 at the measured step times.

    Args:
        config: the recipe config (its `phases`).
        times: phase -> median seconds per step.
        batch_size: images per step.
        epochs: student epochs (augmenter epochs inserted among them come on top).

    Returns:
        Hours, input pipeline and augmenter phases included, evaluation not.
    """
    steps_per_epoch = math.ceil(CIFAR_TRAIN_IMAGES / batch_size)
    student, augmenter = times["student"], times.get("augmenter")
    phases = config.get("phases")
    if phases is None or augmenter is None:
        seconds = epochs * steps_per_epoch * student
    elif phases["mode"] == "steps":
        # An epoch's steps are shared by the phases (kd_keras.recipes.build.optimizer).
        cycle = phases["student_steps"] + phases["augmenter_steps"]
        seconds = (
            epochs
            * steps_per_epoch
            * (phases["student_steps"] * student + phases["augmenter_steps"] * augmenter)
            / cycle
        )
    else:
        augmenter_epochs = sum(build.augmenter_windows(phases, epochs).values())
        student_epochs = epochs if phases["inserted"] else epochs - augmenter_epochs
        seconds = steps_per_epoch * (student_epochs * student + augmenter_epochs * augmenter)
    return seconds / 3600


def main(argv):
    """Run the check; return 0 when every row is verified, 1 otherwise (see the docstring)."""
    del argv
    started = time.perf_counter()
    if FLAGS.quick:
        _apply_quick()
    if FLAGS.rounds < 3:
        # statistics.quantiles extrapolates the 25-75% range of two values
        # beyond them (even below 0).
        raise app.UsageError("--rounds must be at least 3, for the 25-75% range.")
    if not FLAGS.jit or not set(FLAGS.jit) <= {"off", "on"}:
        raise app.UsageError(f"--jit takes off and/or on, got {FLAGS.jit}.")
    for recipe in FLAGS.recipes:
        try:
            kd_keras.recipes.get(recipe)
        except ValueError as error:
            raise app.UsageError(str(error)) from error
    # Retracing notes (each candidate's step is made once, on purpose) would bury the table.
    tf.get_logger().setLevel("ERROR")
    logging.set_verbosity(logging.ERROR)
    memory_device, device_name = _device()
    precisions = FLAGS.precisions or [
        "float32",
        "mixed_float16" if memory_device else "mixed_bfloat16",
    ]
    for precision in precisions:
        kd_precision.check(precision)
    batch = FLAGS.batch_size
    x, y = synthetic_data(max(FLAGS.images, batch))
    source = tf.data.Dataset.from_tensor_slices((x, y))
    keras.utils.set_random_seed(0)
    with kd_precision.policy("float32"):
        teacher = kd_keras.models.get(FLAGS.teacher, SHAPE, CLASSES)

    constant = tf.constant(x[:batch])
    forwards, forward_status = {}, {}
    for jit_flag in FLAGS.jit:
        step, status, failed = teacher_forward(teacher, constant, jit_flag == "on")
        forwards[jit_flag] = step
        forward_status[jit_flag] = (status, failed)

    # One group per recipe: its candidates are compiled, timed in interleaved
    # rounds with the teacher's forward passes (so the shares and the XLA and
    # precision comparisons are paired), then freed before the next recipe's.
    # Holding every recipe's compiled steps at once peaked at 9 GiB RSS on the
    # CPU (7 GiB grouped, XLA compiling the largest steps), and freeing them at
    # exit took 94 s; a recipe's group run again added under 0.1 GiB.
    candidates, iterators, notes = [], {}, []
    forward_times = {jit_flag: [] for jit_flag in FLAGS.jit}
    forward_peaks = {jit_flag: 0 for jit_flag in FLAGS.jit}
    compiling = []
    for index, recipe in enumerate(FLAGS.recipes):
        compile_started = time.perf_counter()
        group = []
        for precision in precisions:
            for jit_flag in FLAGS.jit:
                candidate = Candidate(recipe, precision, jit_flag == "on")
                compile_candidate(
                    candidate,
                    teacher,
                    (FLAGS.teacher, FLAGS.student),
                    source,
                    batch,
                    iterators,
                )
                group.append(candidate)
                print(f"{recipe} {precision} XLA {jit_flag}: {candidate.xla}", flush=True)
                if candidate.xla.startswith("n/a"):
                    break
            if group[-1].xla.startswith("n/a"):
                break
        candidates.extend(group)
        compiling.append(time.perf_counter() - compile_started)
        # Comprehensions: no loop variable keeps a compiled step alive after the group.
        timed = {("teacher forward", jit_flag): step for jit_flag, step in forwards.items()}
        timed.update(
            {
                (candidate, phase): step
                for candidate in group
                for phase, step in candidate.steps.items()
            }
        )
        if len(timed) == len(forwards):
            continue  # nothing of this recipe runs
        groups_after = len(FLAGS.recipes) - index - 1
        steps, note = _steps_per_round(
            started,
            [step_time._time(step, 1) for step in timed.values()],
            statistics.mean(compiling) * groups_after,
            groups_after,
        )
        if note:
            notes.append(f"{recipe}: {note}")
        times, peaks = _time_group(timed, steps, memory_device)
        for jit_flag in FLAGS.jit:
            forward_times[jit_flag].extend(times[("teacher forward", jit_flag)])
            forward_peaks[jit_flag] = max(
                forward_peaks[jit_flag], peaks[("teacher forward", jit_flag)]
            )
        for candidate in group:
            forward = times[("teacher forward", "on" if candidate.jit else "off")]
            for phase in candidate.steps:
                key = (candidate, phase)
                candidate.results[phase] = {
                    "median": statistics.median(times[key]),
                    "share": step_time._paired(forward, times[key]),
                    "peak": peaks[key],
                    "steps": f"{FLAGS.rounds}x{steps}",
                }
            candidate.steps = {}  # the only references to the compiled steps
        del timed
        # Keras models hold reference cycles: collect them now, not at exit.
        gc.collect()
        print(f"{recipe}: {time.perf_counter() - compile_started:.0f} s", flush=True)

    def mebibytes(peak):
        return f"{peak / 2**20:.0f}" if memory_device else "n/a"

    print(
        f"\nDevice check on {device_name}: {FLAGS.teacher} -> {FLAGS.student}, synthetic "
        f"{SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} images, {CLASSES} classes, batch {batch}, "
        f"TF {tf.__version__}, Keras {keras.__version__}; steps timed as rounds x steps, "
        "ratios paired per round: median [25%, 75%]" + (" (--quick)" if FLAGS.quick else "") + "\n"
    )
    for note in notes:
        print(f"Note: {note}")
    if notes:
        print()
    print(
        "| recipe | phase | precision | XLA asked | XLA | img/s | step ms | "
        "teacher share | peak MiB | compile s | steps |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for jit_flag in FLAGS.jit:
        median = statistics.median(forward_times[jit_flag])
        print(
            f"| (teacher forward) | - | float32 | {jit_flag} | {forward_status[jit_flag][0]} | "
            f"{batch / median:.0f} | {median * 1e3:.2f} | 1 | "
            f"{mebibytes(forward_peaks[jit_flag])} | | all rounds |"
        )
    failures = [
        f"teacher forward XLA {jit_flag}: {status}"
        for jit_flag, (status, failed) in forward_status.items()
        if failed
    ]
    for candidate in candidates:
        jit_flag = "on" if candidate.jit else "off"
        asked = "-" if candidate.xla.startswith("n/a") else jit_flag
        if candidate.failed:
            failures.append(
                f"{candidate.recipe} {candidate.precision} XLA {jit_flag}: {candidate.xla}"
            )
        if not candidate.results:
            precision = "-" if candidate.xla.startswith("n/a") else candidate.precision
            print(
                f"| {candidate.recipe} | - | {precision} | {asked} | {candidate.xla} | | | | | | |"
            )
            continue
        for phase, result in candidate.results.items():
            print(
                f"| {candidate.recipe} | {phase} | {candidate.precision} | {asked} | "
                f"{candidate.xla} | {batch / result['median']:.0f} | "
                f"{result['median'] * 1e3:.2f} | {result['share']} | "
                f"{mebibytes(result['peak'])} | {candidate.compile_seconds:.1f} | "
                f"{result['steps']} |"
            )

    if not memory_device:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        print(f"\nCPU: device memory is not tracked per step; process peak RSS {rss:.0f} MiB")
    if FLAGS.epochs_estimate:
        print(
            f"\nProjected wall time on CIFAR-100 ({CIFAR_TRAIN_IMAGES:,} images/epoch, "
            f"batch {batch}) at the measured step times: the {blocks.CRD_EPOCHS}-epoch CRD "
            "schedule, and the recipe's own when it differs (fit epochs include "
            "inserted augmenter epochs)\n"
        )
        print(
            f"| recipe | precision | XLA | hours, {blocks.CRD_EPOCHS} epochs | recipe's epochs "
            "(fit epochs) | hours, recipe's |"
        )
        print("|---|---|---|---|---|---|")
        for candidate in candidates:
            if not candidate.results:
                continue
            medians = {phase: result["median"] for phase, result in candidate.results.items()}
            config = candidate.config
            own = config["epochs"]
            print(
                f"| {candidate.recipe} | {candidate.precision} | "
                f"{'on' if candidate.jit else 'off'} | "
                f"{projected_hours(config, medians, batch, blocks.CRD_EPOCHS):.2f} | "
                f"{own} ({build.fit_epochs(config, own)}) | "
                f"{projected_hours(config, medians, batch, own):.2f} |"
            )
    print(f"\nTotal {time.perf_counter() - started:.0f} s")
    if failures:
        print(
            "\ndevice_check FAILED: these steps did not run as asked "
            "(see the module docstring):\n  " + "\n  ".join(failures),
            file=sys.stderr,
        )
        return 1
    print("device_check OK: every step ran with the XLA setting it asked for.")
    return 0


if __name__ == "__main__":
    app.run(main)
