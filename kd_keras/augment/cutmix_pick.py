"""CutMixPick: CutMix candidates scored without gradients, the top B kept."""

import keras
import tensorflow as tf
from keras import ops

from kd_keras.augment.base import View
from kd_keras.augment.base import map_features
from kd_keras.augment.base import teacher_outputs
from kd_keras.augment.mixing import CutMix
from kd_keras.losses import entropy_per_sample
from kd_keras.losses import kl_per_sample

CRITERIA = ("kl", "teacher_entropy", "student_entropy")


@keras.saving.register_keras_serializable(package="kd_keras")
class CutMixPick(CutMix):
    """CutMixPick: keep the CutMix samples the student learns most from (active DA).

    Makes `n_run` CutMix batches of the clean batch (`n_run * B` candidates,
    each batch with its own ratio and box), scores every candidate without
    gradients and keeps the top `B`: `"student_entropy"` (default) or
    `"teacher_entropy"`, the entropy of the softmax at temperature 1, which
    is what every released command of the official code uses, or `"kl"`,
    `KL(p_t^T || p_s^T)` at `temperature` (the official code's default
    flag). The step trains on `[x, picked]` with the teacher's labels on
    `picked`.

    The student scores in inference mode. The official code scores in
    training mode under `no_grad`, so its BatchNorm layers normalise the
    candidate pool with the pool's own statistics and fold them into their
    moving averages; we do not, so that candidates never trained on leave no
    trace in the student and a candidate's score does not depend on the
    other candidates. For students without BatchNorm (or dropout) the two
    are identical.

    Forward passes per step, in samples (`B` the batch size): the teacher runs
    once over `[x, candidates]` (`B + n_run*B`) and its logits (with the
    features of the same pass when a feature loss reads them) go to the
    Distiller in `View.teacher_logits`, so it is not run again; the student
    runs one inference pass over the `n_run*B` candidates to score them (none
    for `"teacher_entropy"`) and its training pass over the `2B` views. The
    official code runs the teacher on `x`, on the candidates and again on the
    picked samples (`B + n_run*B + B` in three calls) and the student on `x`,
    on the candidates and on the picked samples.

    References:
        Wang et al. What Makes a "Good" Data Augmentation in Knowledge
        Distillation - A Statistical Perspective, arXiv:2012.02909 (seed 001).

    Args:
        n_run: CutMix batches made per step (candidates: `n_run * B`).
        criterion: `"student_entropy"`, `"teacher_entropy"` or `"kl"`.
        temperature: softmax temperature of the `"kl"` score (the KD one).
        alpha: concentration of the Beta(alpha, alpha) mixing ratio.
        relabel: True (default) lets the teacher label the picked samples;
            False keeps their mixed one-hot labels.
        include_clean: True (default) trains on `[x, picked]`; False on
            `picked` only.
        num_classes: number of classes, for mixing integer labels outside a
            Distiller.
        seed: int seed of the layer's `SeedGenerator`, or None (seeded at build).
        per: `"batch"` or `"sample"`: how often `lam` (and a box) is drawn.
        **kwargs: passed to `keras.layers.Layer`.

    Returns:
        An augmenter; `views(...)` returns `kd_keras.augment.Views` with
        `teacher_logits` set.

    Example:
    ```python
    augmenter = kd_keras.augment.CutMixPick(n_run=2, criterion="teacher_entropy")
    ```
    """

    def __init__(
        self,
        n_run=2,
        criterion="student_entropy",
        temperature=4.0,
        alpha=1.0,
        relabel=True,
        include_clean=True,
        num_classes=None,
        seed=None,
        per="batch",
        **kwargs,
    ):
        super().__init__(
            alpha=alpha,
            relabel=relabel,
            include_clean=include_clean,
            num_classes=num_classes,
            seed=seed,
            per=per,
            **kwargs,
        )
        if int(n_run) < 1:
            raise ValueError(f"n_run must be at least 1, got {n_run}: use e.g. 2.")
        if criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}.")
        if not float(temperature) > 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        self.n_run = int(n_run)
        self.criterion = criterion
        self.temperature = float(temperature)

    def candidates(self, x):
        """Return `(candidates, source, partner, lam)` of `n_run` CutMix batches.

        `candidates[i]` mixes `x[source[i]]` (fraction `lam[i]`) with
        `x[partner[i]]`. `views` draws its candidates with this method first,
        so a layer with the same seed reproduces them.
        """
        batch = ops.arange(ops.shape(x)[0], dtype="int32")
        runs = [self.mix_images(x) for _ in range(self.n_run)]
        return (
            ops.concatenate([run[0] for run in runs], axis=0),
            ops.concatenate([batch] * self.n_run, axis=0),
            ops.concatenate([run[1] for run in runs], axis=0),
            ops.concatenate([run[2] for run in runs], axis=0),
        )

    def score(self, teacher_logits, student_logits):
        """Per-candidate score (higher is picked first) under the layer's criterion."""
        if self.criterion == "kl":
            return kl_per_sample(teacher_logits, student_logits, self.temperature)
        logits = teacher_logits if self.criterion == "teacher_entropy" else student_logits
        return entropy_per_sample(logits)

    def views(self, x, y, teacher_fn, student_fn, training=True):
        if not training:
            return View(x, y, deterministic=True)
        batch = ops.shape(x)[0]
        candidates, source, partner, lam = self.candidates(x)
        teacher_clean = features_clean = None
        if self.include_clean:
            # One pass over [x, candidates]: logits, and the features a
            # feature loss needs, of the clean and the picked views.
            teacher_all, features_all = teacher_outputs(
                teacher_fn, ops.concatenate([x, candidates], axis=0)
            )
            teacher_clean, teacher_candidates = teacher_all[:batch], teacher_all[batch:]
            features_clean = map_features(lambda f: f[:batch], features_all)
            features_candidates = map_features(lambda f: f[batch:], features_all)
        else:
            teacher_candidates, features_candidates = teacher_outputs(teacher_fn, candidates)
        student_candidates = None
        if self.criterion != "teacher_entropy":
            student_candidates = student_fn(candidates)
        scores = ops.stop_gradient(self.score(teacher_candidates, student_candidates))
        # top_k, not a sort-and-slice: XLA has a kernel for it and k = B is
        # a compile-time constant of each traced batch shape.
        picked = tf.math.top_k(scores, k=batch).indices
        teacher_picked = ops.take(teacher_candidates, picked, axis=0)
        features_picked = map_features(lambda f: ops.take(f, picked, axis=0), features_candidates)
        return self._assemble(
            x,
            y,
            ops.take(candidates, picked, axis=0),
            ops.take(source, picked),
            ops.take(partner, picked),
            ops.take(lam, picked),
            (
                (
                    None if teacher_clean is None else ops.stop_gradient(teacher_clean),
                    map_features(ops.stop_gradient, features_clean),
                ),
                (
                    ops.stop_gradient(teacher_picked),
                    map_features(ops.stop_gradient, features_picked),
                ),
            ),
            teacher_fn,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "n_run": self.n_run,
            "criterion": self.criterion,
            "temperature": self.temperature,
        }
