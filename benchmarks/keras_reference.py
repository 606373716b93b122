"""The study's Keras stack, for side-by-side timing (run by predict_speed.py / train_speed.py in .venv-keras).

    .venv-keras/bin/python benchmarks/keras_reference.py predict IMAGES_LIST [--batch-size 8] [--warmup 8]
    .venv-keras/bin/python benchmarks/keras_reference.py peak IMAGE
    .venv-keras/bin/python benchmarks/keras_reference.py train --backbone mobilenet|efficientnetb0 [--steps 4]

``make bench-reference`` creates .venv-keras (TensorFlow CPU + Pillow). The stack as the study built it:
Keras ``MobileNet`` (ImageNet layout, random weights here: speed does not depend on them) without its
top + global average pooling + the dense head (256, 128, dropout 0.3, softmax over 2), images loaded
with Pillow through ``keras.utils.load_img`` (grey, resized to 224 x 224), a percentile window
(0.5-99.5) to [0, 1], the grey plane copied to 3 channels, MobileNet's own ``preprocess_input``.
Prints one JSON line. Not imported by osteopano; needs no osteopano.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SIZE = 224


def _peak_rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024


def build(backbone: str = "mobilenet"):
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    if backbone == "mobilenet":
        base = keras.applications.MobileNet(include_top=False, weights=None, input_tensor=inputs, pooling="avg")
    else:
        base = keras.applications.EfficientNetB0(include_top=False, weights=None, input_tensor=inputs,
                                                 pooling="avg")
    x = base.output
    for units in (256, 128):
        x = keras.layers.Dense(units, activation="relu")(x)
        x = keras.layers.Dropout(0.3)(x)
    outputs = keras.layers.Dense(2, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def load(path: str):
    """Pillow load (grey, 224 x 224), percentile window, 3 channels, MobileNet preprocessing."""
    import keras
    import numpy as np

    img = keras.utils.img_to_array(keras.utils.load_img(path, color_mode="grayscale", target_size=(SIZE, SIZE)))
    lo, hi = np.percentile(img, [0.5, 99.5])
    img = np.clip((img - lo) / max(hi - lo, 1e-6), 0.0, 1.0) * 255.0
    return keras.applications.mobilenet.preprocess_input(np.repeat(img, 3, axis=2))


def predict(model, paths: list[str], batch_size: int) -> list[float]:
    import numpy as np

    out: list[float] = []
    for i in range(0, len(paths), batch_size):
        batch = np.stack([load(p) for p in paths[i:i + batch_size]])
        out.extend(float(v) for v in model.predict_on_batch(batch)[:, 1])
    return out


def train_rate(backbone: str, steps: int, batch: int) -> float:
    import numpy as np

    model = build(backbone)
    import keras

    model.compile(optimizer=keras.optimizers.Adam(2e-4), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, SIZE, SIZE, 3), dtype=np.float32)
    y = rng.integers(0, 2, batch)
    for _ in range(2):
        model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("predict", "peak", "train"))
    parser.add_argument("images", nargs="?", help="predict: a text file of image paths; peak: one image")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--backbone", default="mobilenet", choices=("mobilenet", "efficientnetb0"))
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    t0 = time.perf_counter()
    import tensorflow as tf

    result: dict = {"engine": "keras", "tensorflow": tf.__version__}
    if args.mode == "train":
        result["images_per_s"] = train_rate(args.backbone, args.steps, args.batch_size)
        result["backbone"] = args.backbone
    else:
        model = build()
        result["load_s"] = time.perf_counter() - t0
        if args.mode == "peak":
            result["probability"] = predict(model, [args.images], 1)[0]
        else:
            paths = Path(args.images).read_text().split("\n")
            paths = [p for p in paths if p]
            predict(model, paths[:args.warmup], args.batch_size)
            start, cpu = time.perf_counter(), time.process_time()
            predict(model, paths, args.batch_size)
            result["seconds"] = time.perf_counter() - start
            result["cpu_seconds"] = time.process_time() - cpu
            result["n"] = len(paths)
    result["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
