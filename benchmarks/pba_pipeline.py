"""Benchmark: images per second of the tf.data training pipeline with and without the PBA map.

`kd_keras.data.pipeline` (cache, shuffle, batch 64, PBA map over batches,
prefetch) over the embedded digits' training split (28 x 28 x 1) and over
random CIFAR-sized images (32 x 32 x 3), read to the end as Keras `fit` reads
it: no map, the `rolewise` recipe's hand-set PBA policy, and the most work a
policy can ask (every probability 1, level 5: 1.3 ops per image on average,
any of the 15). The last row maps the same batch function for that policy
(`PBAAugment.augment_batch`) as a plain tf.data map, whose graph tf.data then
runs itself: the reason `PBAAugment` hands its batches to TensorFlow's
function runtime instead. The pipelines are read in turns, `--repeats` times
each, and the best pass counts, so that the ratios are measured side by side
under the same load.

Usage:
    PYTHONPATH=. python benchmarks/pba_pipeline.py
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

import kd_keras  # noqa: E402
from kd_keras.augment import pba  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("repeats", 3, "Passes over each pipeline (the best one counts).")
flags.DEFINE_integer("cifar_images", 2048, "Random 32 x 32 x 3 images in the CIFAR-sized set.")


def images_per_second(dataset):
    started = time.perf_counter()
    count = 0
    for images, _ in dataset:
        count += len(images)
    return count / (time.perf_counter() - started)


def run_by_tf_data(augment):
    @tf.autograph.experimental.do_not_convert
    def augment_batch(images, labels):
        return augment.augment_batch(images, labels)

    augment_batch.batched = True
    return augment_batch


def main(argv):
    del argv
    digits = kd_keras.data.load_digits().train
    rng = np.random.default_rng(0)
    cifar = (
        rng.uniform(size=(FLAGS.cifar_images, 32, 32, 3)).astype("float32"),
        rng.integers(0, 10, FLAGS.cifar_images),
    )
    every_op = pba.Policy(np.full((15, 2), 10), np.full((15, 2), 5))
    maps = {
        "no map": lambda: None,
        "PBA, hand-set policy": lambda: pba.PBAAugment(pba.HAND_SET_POLICY),
        "PBA, every probability 1": lambda: pba.PBAAugment(every_op),
        "same, graph run by tf.data": lambda: run_by_tf_data(pba.PBAAugment(every_op)),
    }
    rows = []
    for data_name, data in (("digits 28x28x1", digits), ("random 32x32x3", cifar)):
        pipelines = {
            name: kd_keras.data.pipeline(data, 64, augment=make()) for name, make in maps.items()
        }
        best = dict.fromkeys(pipelines, 0.0)
        for name, dataset in pipelines.items():
            images_per_second(dataset)  # warm-up: tracing, graph optimisation
        for _ in range(FLAGS.repeats):
            for name, dataset in pipelines.items():
                best[name] = max(best[name], images_per_second(dataset))
        for name in pipelines:
            rows.append((data_name, name, best[name], best[name] / best["no map"]))
    print(f"{'data':<16} {'map':<28} {'images/s':>10} {'vs no map':>10}")
    for data_name, name, rate, ratio in rows:
        print(f"{data_name:<16} {name:<28} {rate:>10,.0f} {ratio:>10.4f}")


if __name__ == "__main__":
    app.run(main)
