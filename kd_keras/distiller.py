"""The Distiller: a Keras model that trains a student from a frozen teacher."""

import warnings

import keras
import tensorflow as tf
from keras import ops

from kd_keras import _keras_compat
from kd_keras import loss_terms
from kd_keras import losses as kd_losses
from kd_keras import model_checks
from kd_keras import precision as kd_precision
from kd_keras import strategy as kd_strategy
from kd_keras.augment.base import Augmenter
from kd_keras.augment.base import View
from kd_keras.augment.base import as_views
from kd_keras.loss_terms import FINAL_OUTPUT

STUDENT = "student"
AUGMENTER = "augmenter"
PHASES = (STUDENT, AUGMENTER)
STUDENT_FORWARDS = ("per_view", "joint")
# A training batch may carry the teacher's logits of its inputs (the teacher
# cache of kd_keras.distill): x is then {INPUTS: inputs, TEACHER_LOGITS: logits}.
INPUTS = "inputs"
TEACHER_LOGITS = "teacher_logits"
# Logged by every run, as keras.distillation.Distiller logs them.
_TOTALS = ("loss", "total_loss", "student_loss", "distillation_loss")


@keras.saving.register_keras_serializable(package="kd_keras")
class Distiller(keras.Model):
    """Trains a student to match a frozen teacher on views an augmenter makes.

    A superset of `keras.distillation.Distiller`: the same constructor and
    `compile(optimizer, loss, metrics)` arguments with the same meaning, the
    same losses (`keras.distillation.LogitsDistillation`,
    `FeatureDistillation`, any `DistillationLoss`) and history keys
    (`total_loss`, `student_loss`, `distillation_loss`), plus an augmenter.
    Each step the augmenter turns the batch into views (`kd_keras.augment.View`:
    for plain KD the batch itself), the teacher labels each view (its
    weights are never written) and the student minimises

        total = a * sum_v lw_v * student_loss(y_v, s_v)
              + (1 - a) * sum_i w_i * sum_v dw_v * L_i(t_v, s_v),

    with `a = student_loss_weight`, `w_i` the distillation loss weights and
    `lw_v`, `dw_v` the label and distillation weights each view carries (the
    terms are per-view means), so an augmenter that shows `[x, x']` with the
    labels on `x` alone trains on `a CE(x) + (1 - a) [KD(x) + KD(x')]`. With
    no augmenter (one view, weights 1) this is exactly Keras' formula.

    Features for `FeatureDistillation` come from the same forward pass as the
    logits, one pass per network over the views. A learnable augmenter (one
    with trainable weights) has a phase of its own, in which its optimiser
    minimises `augmenter.objective(...)` while both networks stay frozen;
    `kd_keras.callbacks.PhaseSchedule` flips `phase`. `evaluate()` scores the
    student on clean data and reports its top-1 `agreement` with the teacher;
    `call()` and `predict()` are the student.

    Args:
        teacher: a `keras.Model` that outputs logits; frozen here.
        student: a `keras.Model` with the teacher's input and output shapes.
        distillation_losses: a distillation loss or a list of them; `None`
            (an addition to Keras, which requires them) is
            `kd_keras.losses.TemperatureKL(4.0)`.
        distillation_loss_weights: one weight per distillation loss
            (default 1 each).
        student_loss_weight: `a` above, in `[0, 1]`.
        augmenter: a `kd_keras.augment.Augmenter` (or a `Stack` of them), or
            `None` for plain KD.
        student_forward: `"per_view"` runs the student on each view as its
            own batch (separate BatchNorm statistics, as Wang et al.'s
            official code does); `"joint"` runs it once on all views
            concatenated (as TST's official code does).
        name: the model name.
        **kwargs: passed to `keras.Model`.

    Returns:
        A `keras.Model`; compile it with `compile(optimizer=..., loss=...,
        metrics=..., augmenter_optimizer=...)` and train with `fit`.

    Example:
    ```python
    distiller = kd_keras.Distiller(
        teacher, student, kd_keras.losses.TemperatureKL(4.0), student_loss_weight=0.1,
        augmenter=kd_keras.augment.CutMix())
    distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                      metrics=["accuracy"])
    distiller.fit(x_train, y_train, epochs=10, validation_data=(x_test, y_test))
    ```
    """

    def __init__(
        self,
        teacher,
        student,
        distillation_losses=None,
        distillation_loss_weights=None,
        student_loss_weight=0.5,
        augmenter=None,
        student_forward="per_view",
        name="distiller",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        model_checks.check_models(teacher, student)
        if isinstance(student_loss_weight, bool) or not isinstance(
            student_loss_weight, (int, float)
        ):
            raise ValueError(
                f"student_loss_weight must be a number, got {type(student_loss_weight)}"
            )
        if not 0.0 <= student_loss_weight <= 1.0:
            raise ValueError(
                f"student_loss_weight must be between 0.0 and 1.0, got {student_loss_weight}"
            )
        if student_forward not in STUDENT_FORWARDS:
            raise ValueError(
                f"student_forward must be one of {STUDENT_FORWARDS}, got {student_forward!r}."
            )
        if distillation_losses is None:
            distillation_losses = [kd_losses.TemperatureKL(temperature=4.0)]
        elif not isinstance(distillation_losses, (list, tuple)):
            distillation_losses = [distillation_losses]
        distillation_losses = list(distillation_losses)
        if distillation_loss_weights is None:
            distillation_loss_weights = [1.0] * len(distillation_losses)
        distillation_loss_weights = [float(w) for w in distillation_loss_weights]
        if len(distillation_loss_weights) != len(distillation_losses):
            raise ValueError(
                f"Number of distillation_loss_weights ({len(distillation_loss_weights)}) "
                f"must match number of distillation_losses ({len(distillation_losses)})"
            )
        for loss in distillation_losses:
            if not callable(getattr(loss, "compute_loss", None)):
                raise TypeError(
                    f"{loss!r} is not a distillation loss: pass an object with "
                    "compute_loss(teacher_outputs, student_outputs), e.g. "
                    "kd_keras.losses.TemperatureKL(4.0)."
                )
            loss_terms.warn_if_logits_kl(loss)
            validate = getattr(loss, "validate_model_compatibility", None)
            if validate is not None:
                validate(teacher, student)

        self.teacher = teacher
        self.teacher.trainable = False
        self.student = student
        self.augmenter = augmenter if augmenter is not None else Augmenter()
        self.distillation_losses = distillation_losses
        self.distillation_loss_weights = distillation_loss_weights
        self.student_loss_weight = float(student_loss_weight)
        self.student_forward = student_forward
        self._teacher_features = loss_terms.feature_extractor(
            teacher, loss_terms.layer_names(distillation_losses, "teacher_layer_name")
        )
        self._student_features = loss_terms.feature_extractor(
            student, loss_terms.layer_names(distillation_losses, "student_layer_name")
        )
        self.augmenter_optimizer = None
        self._student_loss = None
        self._student_loss_config = None
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
            self.augmenter.build(model_checks.model_shape(teacher, "input_shape"))
        self._build_trackers()
        self.built = teacher.built and student.built

    @property
    def learnable_augmenter(self):
        """True when the augmenter has trainable weights (and so a phase of its own)."""
        return bool(self.augmenter.trainable_weights)

    @property
    def student_variables(self):
        """What the student's optimiser trains: the student's weights and its losses'.

        A distillation loss with weights of its own (the projection of
        `kd_keras.losses.HintDistillation`, FitNets' regressor) belongs to
        the student's side: trained with it, saved with the Distiller,
        never exported.
        """
        variables = list(self.student.trainable_variables)
        for loss in self.distillation_losses:
            variables.extend(getattr(loss, "trainable_variables", None) or [])
        return variables

    @property
    def needs_teacher_features(self):
        """True when a distillation loss reads the teacher's intermediate features."""
        return self._teacher_features is not None

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
        loss=None,
        metrics=None,
        augmenter_optimizer=None,
        jit_compile="auto",
        steps_per_execution=1,
        run_eagerly=False,
        **kwargs,
    ):
        """Configure the optimisers, the student's loss and its metrics, as Keras does.

        `loss` and `metrics` mean what they mean in
        `keras.distillation.Distiller.compile`: the student's supervised loss
        on its outputs and the metrics computed on them (on the first view,
        the clean batch). `loss=None` (Keras requires one) is the
        cross-entropy of the student's logits with integer or soft labels;
        `metrics=None` logs `accuracy`.

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
            loss: the student's supervised loss (name, function or
                `keras.losses.Loss`), or None for the logits cross-entropy.
            metrics: a list of metrics of the student's outputs.
            augmenter_optimizer: the augmenter's optimiser; defaults to
                `Adam(1e-3)` when the augmenter has trainable weights and
                must be `None` otherwise.
            jit_compile: `True`, `False` or `"auto"`.
            steps_per_execution: batches per compiled call.
            run_eagerly: run the steps eagerly (debugging).
            **kwargs: passed to `keras.Model.compile`.
        """
        if metrics is not None and not isinstance(metrics, (list, tuple)):
            raise ValueError(f"metrics must be a list or tuple, got {type(metrics)}")
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
        self._student_loss = None if loss is None else loss_terms.as_loss_function(loss)
        self._student_loss_config = loss
        self._metrics_config = metrics
        replicated = self.distribute_strategy.num_replicas_in_sync > 1
        super().compile(
            optimizer=optimizer,
            metrics=metrics,
            jit_compile=False if replicated else jit_compile,
            steps_per_execution=steps_per_execution,
            run_eagerly=run_eagerly,
            **kwargs,
        )
        self.replica_jit_compile = (
            replicated
            and not run_eagerly
            and (self._resolve_replica_jit() if jit_compile == "auto" else bool(jit_compile))
        )
        self.augmenter_optimizer = augmenter_optimizer
        self._compile_arguments = {
            "jit_compile": jit_compile,
            "steps_per_execution": steps_per_execution,
        }
        self._compiled_metrics = metrics is not None
        self._train_functions = {}
        self._replica_functions = {}
        self._build_optimizers()

    def get_compile_config(self):
        if not self.compiled:
            return None
        serialize = keras.saving.serialize_keras_object
        return {
            "optimizer": serialize(self.optimizer),
            "loss": serialize(self._student_loss_config),
            "metrics": serialize(self._metrics_config),
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
            self.optimizer.build(self.student_variables)
            if self.augmenter_optimizer is not None:
                self.augmenter_optimizer.build(self.augmenter.trainable_variables)

    def _resolve_replica_jit(self):
        accelerators = [
            device for device in tf.config.list_physical_devices() if device.device_type != "CPU"
        ]
        return bool(accelerators) and all(
            layer.supports_jit for layer in _keras_compat.flatten_layers(self)
        )

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras fetches a batch and reduces it across replicas to build the
        # model, which MultiWorkerMirroredStrategy cannot do for an (x, y)
        # pair. The Distiller is built when constructed and its optimisers at
        # compile, so the build needs no data.
        distributed = _keras_compat.distributed(self)
        built = all(layer.built for layer in _keras_compat.flatten_layers(self))
        # Compiled metrics are built from a batch's shapes: then Keras' way.
        if distributed and built and not self._compiled_metrics:
            with self.distribute_strategy.scope():
                _keras_compat.symbolic_build(self)
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
            The augmenter's views, a `kd_keras.augment.Views`.

        Example:
        ```python
        views = distiller.make_views(images)
        ```
        """
        x = ops.convert_to_tensor(x)
        if y is None:
            y = ops.argmax(self._teacher_fn(x), axis=-1)
        return self._views(x, y)

    def _teacher_fn(self, x):
        return self.teacher(x, training=False)

    def _teacher_with_features(self, x):
        # The teacher_fn handed to `views`: logits, and with_features(x) for
        # the logits and the features the losses read, from one pass.
        if self._teacher_features is None:
            return self._teacher_fn(x), None
        outputs = dict(self._teacher_features(x, training=False))
        return outputs.pop(FINAL_OUTPUT), outputs

    def _views(self, x, y):
        teacher_fn = _with_features(self._teacher_fn, self._teacher_with_features)
        return as_views(self.augmenter.views(x, y, teacher_fn, self._student_fn, training=True))

    def _student_fn(self, x):
        return self.student(x, training=False)

    def train_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        x, cached = _split_cached(x)
        self._steps_trained.assign_add(1)
        if self._phase == AUGMENTER:
            self._augmenter_step(x, y)
            return self._step_logs(self._augmenter_metrics())
        self._student_step(x, y, cached)
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

    def _student_step(self, x, y, cached=None):
        variables = self.student_variables
        gradients, terms, first, teacher_logits, student_logits = self._replica_compiled(
            self._student_gradients
        )(x, y, cached)
        self.optimizer.apply(gradients, variables)
        self._update_trackers(terms, first, teacher_logits, student_logits)

    def _student_gradients(self, x, y, cached=None):
        views = self._views(x, y)
        if cached is not None and views[0].deterministic and views[0].teacher_logits is None:
            # The first view is the batch as it came in: its teacher logits
            # were computed once, before training.
            views[0].teacher_logits = cached
        teacher_outputs = self._teacher_outputs(views)
        with tf.GradientTape() as tape:
            student_outputs = self._student_outputs(views, training=True)
            terms = self._loss_terms(views, teacher_outputs, student_outputs)
            loss = terms["total_loss"]
            if self.student.losses:
                loss = loss + ops.cast(ops.sum(self.student.losses), "float32")
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = self.optimizer.scale_loss(loss / replicas)
        gradients = tape.gradient(scaled, self.student_variables)
        terms["loss"] = loss
        first = (views[0].x, views[0].y, student_outputs[0][FINAL_OUTPUT])
        return (
            gradients,
            terms,
            first,
            _concatenate([t[FINAL_OUTPUT] for t in teacher_outputs]),
            _concatenate([s[FINAL_OUTPUT] for s in student_outputs]),
        )

    def _teacher_outputs(self, views):
        """The teacher's outputs (logits and features) on every view, in one call.

        Outputs an augmenter already computed are reused: its logits, and
        the features of the same pass when a loss needs them
        (`kd_keras.augment.base.teacher_outputs`). The teacher runs, once,
        on the views that lack them.
        """
        features = self._teacher_features is not None
        missing = [
            index
            for index, view in enumerate(views)
            if view.teacher_logits is None or (features and view.teacher_features is None)
        ]
        outputs = [
            None
            if index in missing
            else {**(view.teacher_features or {}), FINAL_OUTPUT: view.teacher_logits}
            for index, view in enumerate(views)
        ]
        if missing:
            batch = _concatenate([views[index].x for index in missing])
            if self._teacher_features is None:
                computed = {FINAL_OUTPUT: self.teacher(batch, training=False)}
            else:
                computed = self._teacher_features(batch, training=False)
            pieces = _split(computed, [views[index].x for index in missing])
            for index, piece in zip(missing, pieces):
                outputs[index] = piece
        return [
            {name: ops.stop_gradient(value) for name, value in output.items()} for output in outputs
        ]

    def _student_outputs(self, views, training):
        forward = self._student_forward_pass
        if self.student_forward == "per_view" or len(views) == 1:
            return [forward(view.x, training) for view in views]
        joint = forward(_concatenate([view.x for view in views]), training)
        return _split(joint, [view.x for view in views])

    def _student_forward_pass(self, x, training):
        if self._student_features is None:
            return {FINAL_OUTPUT: self.student(x, training=training)}
        return self._student_features(x, training=training)

    def _loss_terms(self, views, teacher_outputs, student_outputs):
        """`total_loss` and its parts; each term a per-view mean, weighted and summed."""
        student_loss = ops.zeros((), "float32")
        term_values = [ops.zeros((), "float32") for _ in self.distillation_losses]
        for view, teacher, student in zip(views, teacher_outputs, student_outputs):
            if not loss_terms.is_zero(view.label_weight):
                values = self._student_loss_values(view.y, student[FINAL_OUTPUT])
                student_loss = student_loss + loss_terms.weighted_mean(values, view.label_weight)
            if loss_terms.is_zero(view.distill_weight):
                continue
            for index, distillation_loss in enumerate(self.distillation_losses):
                teacher_value, student_value = loss_terms.loss_inputs(
                    distillation_loss, teacher, student
                )
                validate = getattr(distillation_loss, "validate_outputs", None)
                if validate is not None:
                    validate(teacher_value, student_value)
                if loss_terms.is_scalar(view.distill_weight):
                    value = ops.cast(
                        distillation_loss.compute_loss(teacher_value, student_value),
                        "float32",
                    ) * ops.cast(view.distill_weight, "float32")
                else:
                    value = loss_terms.weighted_mean(
                        loss_terms.per_sample(distillation_loss, teacher_value, student_value),
                        view.distill_weight,
                    )
                term_values[index] = term_values[index] + value
        terms = {"student_loss": student_loss}
        distillation = ops.zeros((), "float32")
        for name, value, weight in zip(
            self._distillation_names, term_values, self.distillation_loss_weights
        ):
            terms[name] = value
            distillation = distillation + weight * value
        terms["distillation_loss"] = distillation
        a = self.student_loss_weight
        terms["total_loss"] = a * student_loss + (1.0 - a) * distillation
        return terms

    def _student_loss_values(self, y, logits):
        if self._student_loss is None:
            return kd_losses.cross_entropy_per_sample(y, logits)
        return ops.cast(self._student_loss(y, logits), "float32")

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

    def test_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        x, cached = _split_cached(x)
        views = (View(x, y, cached),)
        teacher_outputs = self._teacher_outputs(views)
        student_outputs = self._student_outputs(views, training=False)
        terms = self._loss_terms(views, teacher_outputs, student_outputs)
        terms["loss"] = terms["total_loss"]
        student_logits = student_outputs[0][FINAL_OUTPUT]
        self._update_trackers(
            terms, (x, y, student_logits), teacher_outputs[0][FINAL_OUTPUT], student_logits
        )
        return self._step_logs(self._student_metrics())

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self.student(_split_cached(x)[0], training=False)

    def _build_trackers(self):
        self._distillation_names = loss_terms.unique_names(
            self.distillation_losses, (*_TOTALS, "agreement", "accuracy")
        )
        names = [*_TOTALS, *self._distillation_names]
        if self.learnable_augmenter:
            names.append("augmenter_objective")
        self._trackers = {name: keras.metrics.Mean(name=name) for name in names}
        self._accuracy = keras.metrics.Accuracy(name="accuracy")
        self._agreement = keras.metrics.Accuracy(name="agreement")
        # Compiled metrics replace the built-in accuracy, as Keras logs only
        # what compile asked for.
        self._compiled_metrics = False

    def _update_trackers(self, terms, first, teacher_logits, student_logits):
        for name, value in terms.items():
            self._trackers[name].update_state(value)
        x, y, first_logits = first
        if self._compiled_metrics:
            self.compute_metrics(x, y, first_logits)
        else:
            self._accuracy.update_state(
                kd_losses.predicted_class(y), kd_losses.predicted_class(first_logits)
            )
        self._agreement.update_state(
            kd_losses.predicted_class(teacher_logits),
            kd_losses.predicted_class(student_logits),
        )

    def _student_metrics(self):
        return [
            metric
            for metric in self.metrics
            if metric is not self._trackers.get("augmenter_objective")
        ]

    def _augmenter_metrics(self):
        return [self._trackers["augmenter_objective"]]

    @property
    def metrics(self):
        ours = [*self._trackers.values(), self._agreement]
        if not self._compiled_metrics:
            ours.append(self._accuracy)
        # Keras' own `loss` tracker gives way to ours (this step computes the
        # loss); its compiled metrics stay.
        mine = [*self._trackers.values(), self._agreement, self._accuracy]
        compiled = [
            metric
            for metric in super().metrics
            if metric.name != "loss" and all(metric is not own for own in mine)
        ]
        return [*ours, *compiled]

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
            "distillation_losses": [serialize(loss) for loss in self.distillation_losses],
            "distillation_loss_weights": self.distillation_loss_weights,
            "student_loss_weight": self.student_loss_weight,
            "student_forward": self.student_forward,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        deserialize = keras.saving.deserialize_keras_object
        for key in ("teacher", "student", "augmenter"):
            config[key] = deserialize(config[key])
        config["distillation_losses"] = [
            deserialize(loss) for loss in config["distillation_losses"]
        ]
        return cls(**config)


def _with_features(teacher_fn, with_features):
    """`teacher_fn` (inputs -> logits) carrying `with_features` for augmenters."""

    def function(x):
        return teacher_fn(x)

    function.with_features = with_features
    return function


def _split_cached(x):
    if isinstance(x, dict) and TEACHER_LOGITS in x:
        return x[INPUTS], x[TEACHER_LOGITS]
    return x, None


def _updated(metric):
    # Mean-based metrics count their updates; others are always logged.
    count = getattr(metric, "count", None)
    return count is None or float(ops.convert_to_numpy(count)) > 0


def _loss_scaled(optimizer, float16):
    # float16 gradients underflow without loss scaling; bfloat16 has float32's range.
    if float16 and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def _concatenate(tensors):
    if len(tensors) == 1:
        return tensors[0]
    dtype = tensors[0].dtype
    return ops.concatenate([ops.cast(t, dtype) for t in tensors], axis=0)


def _split(outputs, inputs):
    """Split a dict of batch-concatenated outputs back along `inputs`' batch sizes."""
    if len(inputs) == 1:
        return [outputs]
    pieces, start = [], 0
    for x in inputs:
        stop = start + ops.shape(x)[0]
        pieces.append({name: value[start:stop] for name, value in outputs.items()})
        start = stop
    return pieces
