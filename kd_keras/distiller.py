"""The Distiller: a Keras model that trains a student from a frozen teacher."""

import warnings

import keras
import tensorflow as tf
from keras import ops

from kd_keras import losses as kd_losses
from kd_keras import precision as kd_precision
from kd_keras import strategy as kd_strategy
from kd_keras.augment.base import Augmenter
from kd_keras.augment.base import Views
from kd_keras.models.strip_softmax import ends_in_softmax

STUDENT = "student"
AUGMENTER = "augmenter"
PHASES = (STUDENT, AUGMENTER)


@keras.saving.register_keras_serializable(package="kd_keras")
class Distiller(keras.Model):
    """Trains a student to match a frozen teacher on views an augmenter makes.

    `fit()` runs one distillation step per batch: the augmenter turns the batch
    into views, the teacher labels them (its weights are never written), and
    the student minimises
    `student_loss_weight * CE(y, s) + sum_i w_i * distillation_loss_i(t, s)`.
    A learnable augmenter (one with trainable weights) has a phase of its own,
    in which its optimiser minimises `augmenter.objective(...)` while both
    networks stay frozen; `kd_keras.callbacks.PhaseSchedule` flips `phase`.
    `evaluate()` scores the student on clean data and reports its top-1
    agreement with the teacher. `call()` is the student, so `predict()` and
    `export` of `distiller.student` serve the student alone.

    Distillation losses are objects with `compute_loss(teacher_logits,
    student_logits)` returning the mean over the (per-replica) batch:
    `kd_keras.losses.TemperatureKL`, or any `keras.distillation.DistillationLoss`
    such as `LogitsDistillation`. Under a multi-replica `tf.distribute`
    strategy the Distiller divides the total loss by the number of replicas
    once; a loss that already divides (Keras' `LogitsDistillation` with a
    `keras.losses.Loss` instance does) would be counted at a fraction of its
    weight there, so prefer `TemperatureKL`.

    Args:
        teacher: a `keras.Model` that outputs logits; frozen here.
        student: a `keras.Model` that outputs logits, with the teacher's input
            shape and number of classes.
        augmenter: a `kd_keras.augment.Augmenter`, or `None` for plain KD.
        distillation_losses: a loss object or a list of them; defaults to
            `[TemperatureKL(temperature=4.0)]`.
        distillation_loss_weights: one weight per distillation loss; defaults
            to `0.9` each (Hinton's recipe with `student_loss_weight=0.1`).
        student_loss_weight: weight of the student's cross-entropy with the
            labels; `0.0` trains on the teacher alone.
        **kwargs: passed to `keras.Model` (e.g. `name`).

    Returns:
        A `keras.Model`; compile it with `compile(optimizer=...,
        augmenter_optimizer=...)` and train with `fit`.

    Example:
    ```python
    distiller = kd_keras.Distiller(teacher, student, student_loss_weight=0.1)
    distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    distiller.fit(train_ds, epochs=10, validation_data=test_ds)
    distiller.student.save("student.keras")
    ```
    """

    def __init__(
        self,
        teacher,
        student,
        augmenter=None,
        distillation_losses=None,
        distillation_loss_weights=None,
        student_loss_weight=0.1,
        **kwargs,
    ):
        kwargs.setdefault("name", "distiller")
        super().__init__(**kwargs)
        _check_compatible(teacher, student)
        if distillation_losses is None:
            distillation_losses = [kd_losses.TemperatureKL(temperature=4.0)]
        elif not isinstance(distillation_losses, (list, tuple)):
            distillation_losses = [distillation_losses]
        distillation_losses = list(distillation_losses)
        if distillation_loss_weights is None:
            distillation_loss_weights = [0.9] * len(distillation_losses)
        distillation_loss_weights = [float(w) for w in distillation_loss_weights]
        if len(distillation_loss_weights) != len(distillation_losses):
            raise ValueError(
                f"Got {len(distillation_loss_weights)} distillation_loss_weights "
                f"for {len(distillation_losses)} distillation_losses: give one "
                "weight per loss."
            )
        for loss in distillation_losses:
            if not callable(getattr(loss, "compute_loss", None)):
                raise TypeError(
                    f"{loss!r} is not a distillation loss: pass an object with "
                    "compute_loss(teacher_logits, student_logits), e.g. "
                    "kd_keras.losses.TemperatureKL(4.0)."
                )

        for loss in distillation_losses:
            _warn_if_logits_kl(loss)
        self.teacher = teacher
        self.teacher.trainable = False
        self.student = student
        self.augmenter = augmenter if augmenter is not None else Augmenter()
        self.distillation_losses = distillation_losses
        self.distillation_loss_weights = distillation_loss_weights
        self.student_loss_weight = float(student_loss_weight)
        self.augmenter_optimizer = None
        self._phase = STUDENT
        self._train_functions = {}
        self._replica_functions = {}
        self.replica_jit_compile = False
        self._phase_index = self.add_weight(
            shape=(),
            dtype="int32",
            initializer="zeros",
            trainable=False,
            name="phase",
        )
        # Steps of either phase: a monotonic axis for curves drawn while the
        # student's optimiser stands still (kd_keras.callbacks.TensorBoard).
        self._steps_trained = self.add_weight(
            shape=(),
            dtype="int64",
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
            name="steps_trained",
        )
        if not self.augmenter.built:
            self.augmenter.build(_shape(teacher, "input_shape"))
        self._build_trackers()
        self.built = teacher.built and student.built

    @property
    def learnable_augmenter(self):
        """True when the augmenter has trainable weights (and so a phase of its own)."""
        return bool(self.augmenter.trainable_weights)

    @property
    def steps_trained(self):
        """Training steps taken so far in either phase, across `fit` calls."""
        return int(ops.convert_to_numpy(self._steps_trained))

    @property
    def phase(self):
        """`"student"` or `"augmenter"`: which optimiser the next step uses."""
        # The variable, not the Python mirror, is the truth: it is what a
        # .keras file or a BackupAndRestore checkpoint restores.
        return PHASES[int(self._phase_index.numpy())]

    @phase.setter
    def phase(self, value):
        if value not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {value!r}.")
        if value == AUGMENTER and not self.learnable_augmenter:
            raise ValueError(
                "The augmenter has no trainable weights, so there is no "
                "augmenter phase: keep phase='student'."
            )
        self._phase = value
        self._phase_index.assign(PHASES.index(value))
        if self.train_function is not None:
            self.make_train_function()

    def call(self, inputs, training=False):
        return self.student(inputs, training=training)

    def compile(
        self,
        optimizer="adam",
        augmenter_optimizer=None,
        jit_compile="auto",
        steps_per_execution=1,
        run_eagerly=False,
    ):
        """Configure the student's (and the augmenter's) optimiser.

        `jit_compile="auto"` uses XLA on GPU/TPU and not on CPU, where it made
        small-CNN distillation steps about 30% slower on the 2-core machines
        we measured (see the README's performance section). Under a
        multi-replica `tf.distribute` strategy XLA compiles each replica's
        step (views, forward, losses, gradients) and the gradient all-reduce
        and optimiser update run outside it (`replica_jit_compile`); Keras'
        whole-step XLA fails there (variables live on other devices).

        When the student computes in float16 (`mixed_float16`), the student's
        optimiser is wrapped in a `keras.optimizers.LossScaleOptimizer`, and
        so is the augmenter's when either network computes in float16.

        Args:
            optimizer: the student's optimiser (name or instance).
            augmenter_optimizer: the augmenter's optimiser; defaults to
                `Adam(1e-3)` when the augmenter has trainable weights and
                must be `None` otherwise.
            jit_compile: `True`, `False` or `"auto"`.
            steps_per_execution: batches per compiled call.
            run_eagerly: run the steps eagerly (debugging).
        """
        if augmenter_optimizer is not None and not self.learnable_augmenter:
            raise ValueError(
                "augmenter_optimizer was given but the augmenter has no "
                "trainable weights: drop augmenter_optimizer."
            )
        if self.learnable_augmenter and augmenter_optimizer is None:
            augmenter_optimizer = keras.optimizers.Adam(1e-3)
        student_float16 = kd_precision.computes_in(self.student, "float16")
        optimizer = _loss_scaled(keras.optimizers.get(optimizer), student_float16)
        if augmenter_optimizer is not None:
            augmenter_optimizer = _loss_scaled(
                keras.optimizers.get(augmenter_optimizer),
                student_float16 or kd_precision.computes_in(self.teacher, "float16"),
            )
        replicated = self.distribute_strategy.num_replicas_in_sync > 1
        super().compile(
            optimizer=optimizer,
            jit_compile=False if replicated else jit_compile,
            steps_per_execution=steps_per_execution,
            run_eagerly=run_eagerly,
        )
        self.replica_jit_compile = replicated and not run_eagerly and (
            self._resolve_replica_jit() if jit_compile == "auto" else bool(jit_compile)
        )
        self.augmenter_optimizer = augmenter_optimizer
        self._compile_arguments = {
            "jit_compile": jit_compile,
            "steps_per_execution": steps_per_execution,
        }
        self._train_functions = {}
        self._replica_functions = {}
        self._build_optimizers()

    def get_compile_config(self):
        if not self.compiled:
            return None
        serialize = keras.saving.serialize_keras_object
        return {
            "optimizer": serialize(self.optimizer),
            "augmenter_optimizer": serialize(self.augmenter_optimizer),
            **self._compile_arguments,
        }

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)

    def _build_optimizers(self):
        # Both optimisers are built here, not lazily in fit: under a
        # tf.distribute strategy a lazily built second optimiser fails, and a
        # .keras reload only restores optimiser variables that already exist.
        with self.distribute_strategy.scope():
            self.optimizer.build(self.student.trainable_variables)
            if self.augmenter_optimizer is not None:
                self.augmenter_optimizer.build(self.augmenter.trainable_variables)

    def _resolve_replica_jit(self):
        accelerators = [
            device for device in tf.config.list_physical_devices()
            if device.device_type != "CPU"
        ]
        return bool(accelerators) and all(
            layer.supports_jit for layer in self._flatten_layers()
        )

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras fetches a batch and reduces it across replicas to build the
        # model, which MultiWorkerMirroredStrategy cannot do for an (x, y)
        # pair. The Distiller is built when constructed and its optimisers at
        # compile, so the build needs no data.
        distributed = self._distribute_strategy is not None
        if distributed and all(layer.built for layer in self._flatten_layers()):
            with self.distribute_strategy.scope():
                self._symbolic_build(data_batch=None)
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def make_train_function(self, force=False):
        # One compiled step per phase, each traced once: flipping the phase
        # swaps the function instead of retracing, and no tf.cond wraps the
        # optimiser updates (which tf.distribute's merge_call forbids).
        self._phase = self.phase
        if force or self._phase not in self._train_functions:
            super().make_train_function(force=True)
            self._train_functions[self._phase] = self.train_function
        self.train_function = self._train_functions[self._phase]
        return self.train_function

    def load_own_variables(self, store):
        # BackupAndRestore loads weights in on_train_begin, after fit() has
        # already chosen the compiled step for the phase it saw: re-select the
        # step so a restored `_phase_index` takes effect (kd_keras.callbacks).
        super().load_own_variables(store)
        if getattr(self, "train_function", None) is not None:
            self.make_train_function()

    def make_views(self, x, y=None):
        """Return the `Views` the augmenter makes of a batch, as in a training step.

        Use it to look at or check what the augmenter produces (snapshots,
        collapse checks) outside `fit`; nothing is trained.

        Args:
            x: a batch of inputs.
            y: its labels; the teacher's predicted classes when None.

        Returns:
            The augmenter's `kd_keras.augment.Views`.

        Example:
        ```python
        views = distiller.make_views(images)
        ```
        """
        x = ops.convert_to_tensor(x)
        if y is None:
            y = ops.argmax(self._teacher_fn(x), axis=-1)
        return self.augmenter.views(x, y, self._teacher_fn, self._student_fn, training=True)

    def _teacher_fn(self, x):
        return self.teacher(x, training=False)

    def _student_fn(self, x):
        return self.student(x, training=False)

    def train_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        self._steps_trained.assign_add(1)
        if self._phase == AUGMENTER:
            self._augmenter_step(x, y)
            return self._step_logs(self._augmenter_metrics())
        self._student_step(x, y)
        return self._step_logs(self._student_metrics())

    def fit(self, *args, callbacks=None, **kwargs):
        if self.learnable_augmenter and not any(
            getattr(callback, "sets_distiller_phase", False) for callback in callbacks or []
        ):
            frozen = AUGMENTER if self.phase == STUDENT else STUDENT
            warnings.warn(
                "The augmenter has trainable weights but no PhaseSchedule is among "
                f"the callbacks: this fit trains only the {self.phase} (phase="
                f"{self.phase!r}) and the {frozen} stays as it is; pass "
                "kd_keras.callbacks.PhaseSchedule(...) to alternate the phases.",
                stacklevel=2,
            )
        return super().fit(*args, callbacks=callbacks, **kwargs)

    def get_metrics_result(self):
        # Eagerly (epoch ends, evaluate), only metrics updated since the last
        # reset: an epoch that trained the augmenter alone must not log the
        # student's untouched metrics as zeros.
        result = super().get_metrics_result()
        if not tf.executing_eagerly():
            return result
        stale = {metric.name for metric in self.metrics if not _updated(metric)}
        if len(stale) == len(self.metrics):
            return result
        return {name: value for name, value in result.items() if name not in stale}

    def _get_metrics_result_or_logs(self, logs):
        # Keras falls back to the last step's logs when their keys differ
        # from the metrics'; a step-mode epoch's last step logs one phase's
        # metrics only, so the epoch's logs always come from the metrics.
        return self.get_metrics_result()

    def _student_metrics(self):
        return [
            metric for name, metric in self._trackers.items()
            if name != "augmenter_objective"
        ] + [self._accuracy, self._agreement]

    def _augmenter_metrics(self):
        return [self._trackers["augmenter_objective"]]

    def _step_logs(self, metrics):
        logs = {metric.name: metric.result() for metric in metrics}
        if kd_strategy.is_multi_worker(self.distribute_strategy):
            # Keras averages step results across workers along a batch axis
            # (strategy.reduce(..., axis=0)), which a scalar lacks.
            logs = {name: ops.reshape(value, (1,)) for name, value in logs.items()}
        return logs

    def _replica_compiled(self, function):
        # Per-replica XLA: the function is traced and compiled inside each
        # replica; the optimiser's cross-replica update stays outside it.
        if not self.replica_jit_compile:
            return function
        compiled = self._replica_functions.get(function.__name__)
        if compiled is None:
            compiled = tf.function(function, jit_compile=True)
            self._replica_functions[function.__name__] = compiled
        return compiled

    def _student_step(self, x, y):
        variables = self.student.trainable_variables
        gradients, terms, labels, teacher_logits, student_logits = self._replica_compiled(
            self._student_gradients
        )(x, y)
        self.optimizer.apply(gradients, variables)
        self._update_trackers(terms, labels, teacher_logits, student_logits)

    def _student_gradients(self, x, y):
        views = self.augmenter.views(
            x, y, self._teacher_fn, self._student_fn, training=True
        )
        teacher_logits = views.teacher_logits
        if teacher_logits is None:
            teacher_logits = self._teacher_fn(views.x)
        teacher_logits = ops.stop_gradient(teacher_logits)
        with tf.GradientTape() as tape:
            student_logits = self.student(views.x, training=True)
            terms = self._loss_terms(views, teacher_logits, student_logits)
            loss = terms["loss"]
            if self.student.losses:
                loss = loss + ops.cast(ops.sum(self.student.losses), "float32")
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = self.optimizer.scale_loss(loss / replicas)
        gradients = tape.gradient(scaled, self.student.trainable_variables)
        terms["loss"] = loss
        return gradients, terms, views.y, teacher_logits, student_logits

    def _augmenter_step(self, x, y):
        gradients, objective = self._replica_compiled(self._augmenter_gradients)(x, y)
        self.augmenter_optimizer.apply(gradients, self.augmenter.trainable_variables)
        self._trackers["augmenter_objective"].update_state(objective)

    def _augmenter_gradients(self, x, y):
        with tf.GradientTape() as tape:
            objective = ops.cast(
                self.augmenter.objective(x, y, self._teacher_fn, self._student_fn),
                "float32",
            )
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = self.augmenter_optimizer.scale_loss(objective / replicas)
        return tape.gradient(scaled, self.augmenter.trainable_variables), objective

    def _loss_terms(self, views, teacher_logits, student_logits):
        cross_entropy = kd_losses.cross_entropy_per_sample(views.y, student_logits)
        student_loss = _weighted_mean(cross_entropy, views.label_weight)
        terms = {"student_loss": student_loss}
        loss = self.student_loss_weight * student_loss
        for name, distillation_loss, weight in zip(
            self._distillation_names,
            self.distillation_losses,
            self.distillation_loss_weights,
        ):
            if views.distill_weight is None:
                value = distillation_loss.compute_loss(teacher_logits, student_logits)
            else:
                value = _weighted_mean(
                    _per_sample(distillation_loss, teacher_logits, student_logits),
                    views.distill_weight,
                )
            terms[name] = ops.cast(value, "float32")
            loss = loss + weight * terms[name]
        terms["loss"] = loss
        return terms

    def test_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        teacher_logits = self._teacher_fn(x)
        student_logits = self.student(x, training=False)
        terms = self._loss_terms(Views(x, y), teacher_logits, student_logits)
        self._update_trackers(terms, y, teacher_logits, student_logits)
        return self._step_logs(self._student_metrics())

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self.student(x, training=False)

    def _build_trackers(self):
        self._distillation_names = _unique_names(self.distillation_losses)
        names = ["loss", "student_loss", *self._distillation_names]
        if self.learnable_augmenter:
            names.append("augmenter_objective")
        self._trackers = {name: keras.metrics.Mean(name=name) for name in names}
        self._accuracy = keras.metrics.Accuracy(name="accuracy")
        self._agreement = keras.metrics.Accuracy(name="agreement")

    def _update_trackers(self, terms, y, teacher_logits, student_logits):
        for name, value in terms.items():
            self._trackers[name].update_state(value)
        student_class = kd_losses.predicted_class(student_logits)
        self._accuracy.update_state(kd_losses.predicted_class(y), student_class)
        self._agreement.update_state(
            kd_losses.predicted_class(teacher_logits), student_class
        )

    @property
    def metrics(self):
        return [*self._trackers.values(), self._accuracy, self._agreement]

    def get_config(self):
        serialize = keras.saving.serialize_keras_object
        teacher = serialize(self.teacher)
        # The teacher is frozen here: restored with its own compile state it
        # got a fresh optimiser, and Keras warned that it skipped loading
        # the saved one (41 variables vs 1), a false alarm.
        teacher.pop("compile_config", None)
        return {
            **super().get_config(),
            "teacher": teacher,
            "student": serialize(self.student),
            "augmenter": serialize(self.augmenter),
            "distillation_losses": [serialize(l) for l in self.distillation_losses],
            "distillation_loss_weights": self.distillation_loss_weights,
            "student_loss_weight": self.student_loss_weight,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        deserialize = keras.saving.deserialize_keras_object
        for key in ("teacher", "student", "augmenter"):
            config[key] = deserialize(config[key])
        config["distillation_losses"] = [
            deserialize(l) for l in config["distillation_losses"]
        ]
        return cls(**config)


def _warn_if_logits_kl(loss):
    # keras.distillation.LogitsDistillation's default loss="kl_divergence"
    # becomes the function kl_divergence, not a KLDivergence instance, so no
    # softmax is applied: the KL of logits clipped to [1e-7, 1] teaches nothing.
    if not isinstance(loss, keras.distillation.LogitsDistillation):
        return
    if any(
        function is keras.losses.kl_divergence
        for function in keras.tree.flatten(loss.loss)
    ):
        warnings.warn(
            "LogitsDistillation(loss='kl_divergence') applies no softmax in Keras "
            f"{keras.__version__} (it takes the KL of clipped logits, which trains "
            "to chance): pass loss=keras.losses.KLDivergence() or use "
            "kd_keras.losses.TemperatureKL(temperature).",
            stacklevel=3,
        )


def _updated(metric):
    # Mean-based metrics count their updates; others are always logged.
    count = getattr(metric, "count", None)
    return count is None or float(ops.convert_to_numpy(count)) > 0


def _loss_scaled(optimizer, float16):
    # float16 gradients underflow without loss scaling; bfloat16 has float32's range.
    if float16 and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def _check_compatible(teacher, student):
    if ends_in_softmax(teacher):
        raise ValueError(
            f"The teacher {teacher.name!r} ends in a softmax, but distillation "
            "needs logits: pass kd_keras.models.strip_softmax(teacher)."
        )
    if ends_in_softmax(student):
        raise ValueError(
            f"The student {student.name!r} ends in a softmax, but distillation "
            "needs logits: rebuild its last layer with activation=None."
        )
    teacher_out = _shape(teacher, "output_shape")
    student_out = _shape(student, "output_shape")
    if teacher_out and student_out and teacher_out[-1] != student_out[-1]:
        raise ValueError(
            f"The teacher outputs {teacher_out[-1]} classes and the student "
            f"{student_out[-1]}: build the student with num_classes="
            f"{teacher_out[-1]}."
        )
    teacher_in = _shape(teacher, "input_shape")
    student_in = _shape(student, "input_shape")
    if teacher_in and student_in and tuple(teacher_in[1:]) != tuple(student_in[1:]):
        raise ValueError(
            f"The teacher takes inputs of shape {tuple(teacher_in[1:])} and the "
            f"student {tuple(student_in[1:])}: build the student with "
            f"input_shape={tuple(teacher_in[1:])}."
        )


def _shape(model, attribute):
    try:
        shape = getattr(model, attribute)
    except (AttributeError, ValueError):
        return None
    # Multi-input or multi-output models are checked by the losses instead.
    if isinstance(shape, list) or not isinstance(shape, tuple):
        return None
    return shape


def _weighted_mean(values, weight):
    if weight is None:
        return ops.mean(values)
    weight = ops.cast(weight, "float32")
    return ops.sum(ops.cast(values, "float32") * weight) / ops.maximum(ops.sum(weight), 1e-8)


def _per_sample(distillation_loss, teacher_logits, student_logits):
    per_sample = getattr(distillation_loss, "call", None)
    if per_sample is None:
        raise TypeError(
            f"{type(distillation_loss).__name__} gives no per-sample values, which "
            "this augmenter's per-sample distillation weights need: use "
            "kd_keras.losses.TemperatureKL."
        )
    return per_sample(teacher_logits, student_logits)


def _unique_names(distillation_losses):
    names = []
    for loss in distillation_losses:
        base = getattr(loss, "name", None) or type(loss).__name__.lower()
        name, index = base, 1
        while name in names or name in ("loss", "student_loss"):
            index += 1
            name = f"{base}_{index}"
        names.append(name)
    return names
