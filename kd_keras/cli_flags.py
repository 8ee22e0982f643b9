"""The flag set of each `kd-keras` command, one `define_*` function per command.

Each command parses its own `absl.flags.FlagValues` (see `kd_keras.cli`), so
flags shared by several commands are defined once per command, with help that
says what the flag means there. No TensorFlow import: `--help` answers at once.
"""

from absl import flags

# Flags shared by several commands: each command defines its own copy, with
# help text that says what the flag means for that command.


def _define_data(
    flag_values,
    datasets="'digits', 'mnist1d' or 'text-default' (embedded, offline) or 'tfds:NAME'",
):
    flags.DEFINE_string("dataset", "digits", f"Data set: {datasets}.", flag_values=flag_values)
    flags.DEFINE_string(
        "data_dir",
        None,
        "TFDS data directory (default: TFDS's own, ~/tensorflow_datasets).",
        flag_values=flag_values,
    )
    flags.DEFINE_enum(
        "download",
        "auto",
        ["auto", "yes", "no"],
        "TFDS download: auto = only when the servers are reachable.",
        flag_values=flag_values,
    )


def _define_allow_weak_teacher(flag_values, what):
    flags.DEFINE_bool(
        "allow_weak_teacher",
        False,
        f"{what} a teacher near chance (Cohen's kappa < 0.1 on the evaluation data, e.g. "
        "accuracy below 19% on 10 balanced classes) instead of refusing it.",
        flag_values=flag_values,
    )


def _define_seed(flag_values):
    flags.DEFINE_integer("seed", 0, "Seed of everything random.", flag_values=flag_values)


def _define_verbose(flag_values, meaning=None):
    flags.DEFINE_enum(
        "verbose",
        "auto",
        ["auto", "0", "1", "2", "3"],
        meaning
        or (
            "Output while training: auto = a progress bar on a terminal, one line per "
            "epoch otherwise (a log file); 0 = the summary only; 1 = progress bars; 2 = "
            "one line per epoch; 3 = as 2, plus the libraries' own log lines (TensorFlow's "
            "Python INFO lines, the TFLite converter's and LiteRT's native messages; "
            "TensorFlow's C++ INFO lines also need TF_CPP_MIN_LOG_LEVEL=0)."
        ),
        flag_values=flag_values,
    )


def _define_strategy(flag_values, what):
    flags.DEFINE_enum(
        "strategy",
        "default",
        ["default", "mirrored", "multiworker"],
        f"tf.distribute strategy of {what}; multiworker reads its cluster from TF_CONFIG.",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "cpu_devices",
        None,
        "Split the CPU into this many logical devices (replicas of --strategy=mirrored "
        "on a machine without GPUs; for testing, not speed). Default: one device.",
        lower_bound=1,
        flag_values=flag_values,
    )


def _define_batch_size(flag_values, default, meaning):
    flags.DEFINE_integer(
        "batch_size", default, f"Batch size{meaning}.", lower_bound=1, flag_values=flag_values
    )


def _define_export(flag_values):
    flags.DEFINE_list(
        "export",
        ["keras", "saved_model", "tflite"],
        "Export formats: keras, saved_model, tflite, tflite_float16, tflite_int8.",
        flag_values=flag_values,
    )


def _define_unsafe(flag_values):
    flags.DEFINE_bool(
        "unsafe_deserialization",
        False,
        "Load .keras files that hold Python code (Lambda layers); only for files you trust.",
        flag_values=flag_values,
    )


def _define_set(flag_values, recipe):
    flags.DEFINE_multi_string(
        "set",
        [],
        f"Override an option of {recipe} or a setting of its config KEY=VALUE "
        "(repeatable), e.g. temperature=2 or optimizer.learning_rate=0.1; "
        "--print_config shows them all (default: the recipe's).",
        flag_values=flag_values,
    )


def define_distill(flag_values):
    flags.DEFINE_string(
        "recipe", "kd", "Recipe name (see kd_keras.recipes.names()).", flag_values=flag_values
    )
    flags.DEFINE_bool(
        "print_config",
        False,
        "Print the recipe's resolved config (after --set) as JSON and exit; a run keeps "
        "it as config.json.",
        flag_values=flag_values,
    )
    _define_data(flag_values)
    flags.DEFINE_string(
        "teacher",
        None,
        "Teacher: a .keras path, 'shipped:digits_cnn', 'shipped:mnist1d_cnn', "
        "'shipped:text_default' or a zoo name (trained on the data first). Default: the data "
        "set's (shipped:digits_cnn on digits, shipped:mnist1d_cnn on mnist1d, "
        "shipped:text_default on text-default, text_transformer on TFDS text sets).",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "student",
        None,
        "Student zoo name. Default: the data set's (mlp; mnist1d_mlp on mnist1d; text_cnn on "
        "text data).",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "bits",
        None,
        "DoReFa bits of the student's weights and activations (e.g. 2; default full precision).",
        lower_bound=1,
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "epochs",
        None,
        "Epochs (default: the data set's, 30 on digits, 60 on mnist1d, 10 on text-default; "
        "else the recipe's).",
        lower_bound=1,
        flag_values=flag_values,
    )
    _define_batch_size(flag_values, None, " (default: the recipe's)")
    flags.DEFINE_float(
        "learning_rate", None, "Learning rate (default: the recipe's).", flag_values=flag_values
    )
    _define_seed(flag_values)
    flags.DEFINE_integer(
        "teacher_epochs",
        30,
        "Epochs of a --teacher given as a zoo name.",
        lower_bound=1,
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "out",
        None,
        "Run directory; an unfinished run there, of the same command, is resumed "
        "(default: runs/distill-RECIPE-DATASET-TIME).",
        flag_values=flag_values,
    )
    _define_export(flag_values)
    flags.DEFINE_string(
        "policy",
        None,
        "PBA schedule JSON of the student agent (--recipe=rolewise; default: the recipe's).",
        flag_values=flag_values,
    )
    _define_set(flag_values, "the recipe")
    flags.DEFINE_multi_string(
        "hint",
        [],
        "A FitNets hint added to the recipe's losses, TEACHER_LAYER:STUDENT_LAYER[:WEIGHT] "
        "(repeatable): the mean squared error between the two layers' outputs, with a "
        "learned projection when their widths differ, weight 1 by default; the same as "
        "--set extra_losses=[{'class_name': 'HintDistillation', ...}]. An unknown layer "
        "name lists the model's layers.",
        flag_values=flag_values,
    )
    _define_strategy(flag_values, "the distillation")
    flags.DEFINE_enum(
        "precision",
        "float32",
        ["float32", "mixed_float16", "mixed_bfloat16"],
        "The student's precision; it is exported in float32.",
        flag_values=flag_values,
    )
    flags.DEFINE_enum(
        "teacher_precision",
        "float32",
        ["float32", "bfloat16", "float16"],
        "Precision of the frozen teacher's forward pass.",
        flag_values=flag_values,
    )
    _define_verbose(flag_values)
    flags.DEFINE_bool(
        "deterministic",
        False,
        "TensorFlow's deterministic ops, so reruns give identical weights on GPU too "
        "(slower there; ops without a deterministic kernel fail).",
        flag_values=flag_values,
    )
    flags.DEFINE_enum(
        "teacher_cache",
        "auto",
        ["auto", "true", "false"],
        "Compute the teacher's logits of the training inputs once and reuse them for "
        "every view that shows them unchanged; auto: whenever that is exact.",
        flag_values=flag_values,
    )
    _define_unsafe(flag_values)
    _define_allow_weak_teacher(flag_values, "Distil from")


def define_train_teacher(flag_values):
    flags.DEFINE_string(
        "model",
        "cnn",
        "Zoo name of the teacher (see kd_keras.models.names()).",
        flag_values=flag_values,
    )
    _define_data(flag_values)
    flags.DEFINE_integer(
        "epochs",
        None,
        "Epochs (default: 30, or 240 with --schedule=crd).",
        lower_bound=1,
        flag_values=flag_values,
    )
    _define_batch_size(flag_values, 64, "")
    flags.DEFINE_float(
        "learning_rate",
        None,
        "Initial learning rate (default: the schedule's, 1e-3 for adam, 0.05 for crd).",
        flag_values=flag_values,
    )
    _define_seed(flag_values)
    flags.DEFINE_string(
        "out",
        None,
        "Path of the .keras teacher; its card is written beside it as .json "
        "(default: runs/teacher-MODEL-DATASET-TIME.keras).",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "policy",
        None,
        "PBA schedule JSON of the teacher agent of role-wise KD, applied to the training images "
        "(default: no augmentation).",
        flag_values=flag_values,
    )
    flags.DEFINE_enum(
        "schedule",
        "adam",
        ["adam", "crd"],
        "adam (Adam 1e-3, cosine, 30 epochs) or crd (the CRD CIFAR-100 teacher recipe: "
        "SGD 0.05, x0.1 at 150/180/210 of 240 epochs, pad-crop-flip).",
        flag_values=flag_values,
    )
    _define_strategy(flag_values, "the training")
    flags.DEFINE_enum(
        "precision",
        "float32",
        ["float32", "mixed_float16", "mixed_bfloat16"],
        "The teacher's training precision; it is saved in float32.",
        flag_values=flag_values,
    )
    _define_verbose(flag_values)
    _define_allow_weak_teacher(
        flag_values, "Exit 0 for (the teacher and its card are written either way)"
    )


def define_train_vae(flag_values):
    _define_data(flag_values, "'digits' (offline) or 'tfds:NAME' (images in [0, 1])")
    flags.DEFINE_integer("epochs", 100, "Epochs.", lower_bound=1, flag_values=flag_values)
    _define_batch_size(flag_values, 64, "")
    flags.DEFINE_integer(
        "latent_dim", 16, "Size of the latent code.", lower_bound=1, flag_values=flag_values
    )
    flags.DEFINE_float("learning_rate", 1e-3, "Adam's learning rate.", flag_values=flag_values)
    _define_seed(flag_values)
    flags.DEFINE_string(
        "out",
        "runs/vae.keras",
        "Path of the .keras VAE; its card is written beside it as .json.",
        flag_values=flag_values,
    )
    _define_verbose(flag_values)


def define_search(flag_values):
    flags.DEFINE_enum(
        "role",
        "teacher",
        ["teacher", "student"],
        "The agent's role: teacher (trains --model with CE) or student (distils --model "
        "from the frozen --teacher).",
        flag_values=flag_values,
    )
    _define_data(flag_values, "'digits' (offline) or 'tfds:NAME' (images)")
    flags.DEFINE_string(
        "model",
        None,
        "Zoo name of the network trained (default: cnn for --role=teacher, mlp for "
        "--role=student).",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "teacher",
        None,
        "--role=student: the frozen teacher, a .keras path, 'shipped:digits_cnn' or a zoo "
        "name (default: shipped:digits_cnn).",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "bits",
        None,
        "Train --model as a DoReFa network of this many bits (default: full precision).",
        lower_bound=1,
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "population", 16, "Number of trials.", lower_bound=1, flag_values=flag_values
    )
    flags.DEFINE_integer(
        "epochs",
        None,
        "Epochs of every trial (default: 30 on digits, else 200).",
        lower_bound=1,
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "perturbation_interval",
        3,
        "Epochs between exploit/explore steps.",
        lower_bound=1,
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "train_size",
        None,
        "Train on a fixed seeded subset of this many samples (default: all the samples "
        "not held out for the reward).",
        lower_bound=1,
        flag_values=flag_values,
    )
    _define_batch_size(flag_values, 64, "")
    flags.DEFINE_float(
        "learning_rate",
        None,
        "Learning rate (default: 1e-3 (Adam) for --role=teacher, the recipe's for --role=student).",
        flag_values=flag_values,
    )
    _define_seed(flag_values)
    flags.DEFINE_string(
        "out",
        None,
        "Output directory (default: runs/search-ROLE-DATASET-TIME).",
        flag_values=flag_values,
    )
    flags.DEFINE_bool(
        "resume",
        False,
        "Continue the search in --out (after a crash or an interrupt).",
        flag_values=flag_values,
    )
    _define_set(flag_values, "recipe rolewise (--role=student)")
    _define_allow_weak_teacher(flag_values, "--role=student: search with")
    _define_verbose(
        flag_values,
        "Output: auto or 0 = the summary only; 1, 2, 3 = Ray Tune's own verbosity (1: "
        "its status tables).",
    )


def define_export_command(flag_values):
    flags.DEFINE_string(
        "model",
        None,
        "Path of the .keras student to export (required, no default).",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "out",
        None,
        "Directory for the exported files (required, no default).",
        flag_values=flag_values,
    )
    _define_export(flag_values)
    _define_data(
        flag_values,
        "the data the student was trained on, for the parity checks: 'digits', "
        "'text-default' or 'tfds:NAME'",
    )
    _define_unsafe(flag_values)
