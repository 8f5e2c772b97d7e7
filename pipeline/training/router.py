"""Training the router of ``task: auto`` (:class:`pipeline.routing.Router`) on the training photos.

Every sample is a random crop of a training photo (held-out sources never appear), at a random area
downscale of 1 to 3, 256 to 768 px a side, given one kind of degradation by the project's own renderers
(:mod:`dgunet.degrade`) and labelled with it:

* ``clean``: left alone, or with what no restorer should touch: sensor noise of sigma up to 2, or JPEG at
  quality 90 to 97;
* ``noise``: Gaussian noise of sigma 3 to 55 (log-uniform, so that faint noise is as common as strong), or
  for half of them a camera's noise (:mod:`dgunet.camera`, the shot gain log-uniform from 3e-4 to 1.2e-2:
  about 4 to 30 levels), sometimes saved as a camera JPEG (quality 80 to 95);
* ``jpeg``: JPEG at quality 15 to 75;
* ``blur``: camera shake (60%) or defocus, 5 to 31 px, then sensor noise of sigma up to 3;
* ``rain``: the training renderer (``smear``) only: the independent ``lines`` renderer stays unseen, for
  the held-out table.

A degraded sample within :data:`CLEAN_DB` of its clean crop is labelled clean: a change that small (an RMS
error under one 8-bit level) is invisible. Any larger damage keeps its kind, JPEG on a flat sky and blur
on a soft one included, since the held-out table counts every degraded image as its kind.

The features are :func:`pipeline.quality.degradation_features`, exactly as the decode stage
measures them. Three classifiers are fitted (scikit-learn, the ``eval`` extra) and scored by
cross-validation grouped by photo, so no photo is in both a fold's training and its test: logistic
regression, a multilayer perceptron with one hidden layer, and a depth-limited decision tree (thresholds).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..routing import CLASSES, INPUTS, Router, feature_vector

CROP_SIDE = (256, 768)
CLEAN_DB = 50.0  # a degraded sample this close to its clean crop (PSNR, dB) is labelled clean
SCALE = (1.0, 3.0)


def degrade_as(kind: str, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``clean`` (float32 ``(H, W, 3)`` in [0, 1]) degraded as a sample of class ``kind``; 8-bit RGB."""
    from dgunet.degrade import Degradation, add_noise, blur, blur_kernel, jpeg, rain, to_uint8

    if kind == "clean":
        choice = rng.random()
        if choice < 0.2:
            clean = add_noise(clean, rng.uniform(0, 2), rng)
        elif choice < 0.4:
            clean = jpeg(clean, int(rng.integers(90, 98)))
        return to_uint8(clean)
    if kind == "noise":
        if rng.random() < 0.5:
            from dgunet.camera import camera_noise, draw_shot

            noisy = camera_noise(clean, draw_shot(3e-4, 1.2e-2, rng), rng)[0]
            return to_uint8(jpeg(noisy, int(rng.integers(80, 96))) if rng.random() < 0.3 else noisy)
        return to_uint8(add_noise(clean, float(np.exp(rng.uniform(np.log(3), np.log(55)))), rng))
    if kind == "jpeg":
        return to_uint8(jpeg(clean, int(rng.integers(15, 76))))
    if kind == "blur":
        spec = Degradation(kinds=("blur",), blur_size=(5, 31), blur_motion_probability=0.6)
        return to_uint8(add_noise(blur(clean, blur_kernel(spec, rng)), rng.uniform(0, 3), rng))
    if kind == "rain":
        spec = Degradation(
            kinds=("rain",),
            rain_renderer="smear",
            rain_density=(0.001, 0.02),
            rain_length=(10, 35),
            rain_width=(1, 2.5),
            rain_haze=0.3,
        )
        return to_uint8(rain(clean, spec, rng))
    raise ValueError(f"Expected a class from {CLASSES}, but got {kind!r} instead.")


def random_crop(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A crop of an 8-bit photo at a random area downscale, as float32 in [0, 1]."""
    import cv2

    s = rng.uniform(*SCALE)
    small = cv2.resize(photo, None, fx=1 / s, fy=1 / s, interpolation=cv2.INTER_AREA) if s > 1.01 else photo
    side = min(small.shape[0], small.shape[1], int(rng.integers(CROP_SIDE[0], CROP_SIDE[1] + 1)))
    y, x = (int(rng.integers(0, small.shape[i] - side + 1)) for i in (0, 1))
    return small[y : y + side, x : x + side].astype(np.float32) / 255.0


def make_samples(
    photos: dict[str, np.ndarray],
    per_class: int,
    seed: int,
    log: Callable[[str], None] = print,
    processes: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``per_class`` samples of every class: inputs ``(N, len(INPUTS))``, the class each was drawn as
    (index), groups (the photo's index), and each sample's PSNR against its clean crop (dB; inf where
    untouched): :func:`relabel` makes the labels from the last two. ``processes`` measure shares of them
    side by side, each from its own stream (``[seed, share]``), so the samples depend on ``seed`` and
    ``processes`` and on nothing else."""
    counts = [per_class * (k + 1) // processes - per_class * k // processes for k in range(processes)]
    shares = [(photos, count, [seed, k]) for k, count in enumerate(counts)]
    if processes == 1:
        parts = [_samples(*shares[0], log=log)]
    else:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(processes) as pool:
            parts = pool.starmap(_samples, shares)  # each share logs from its own process
    x, drawn, groups, db = (np.concatenate([part[i] for part in parts]) for i in range(4))
    return x, drawn, groups, db


def relabel(drawn: np.ndarray, db: np.ndarray, clean_db: float = CLEAN_DB) -> np.ndarray:
    """The labels of samples drawn as classes ``drawn`` whose PSNR against their clean crop is ``db``:
    damage within ``clean_db`` of the clean crop is no damage (class 0, clean)."""
    return np.where(db >= clean_db, 0, drawn)


def _samples(
    photos: dict[str, np.ndarray], per_class: int, seed: list[int], log: Callable[[str], None] = print
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from dgunet.degrade import to_uint8

    from ..quality import degradation_features, psnr

    rng = np.random.default_rng(seed)
    names = sorted(photos)
    x, y, groups, db = [], [], [], []
    t0 = time.process_time()
    for i in range(per_class * len(CLASSES)):
        label = i % len(CLASSES)
        g = int(rng.integers(len(names)))
        clean = random_crop(photos[names[g]], rng)
        img = degrade_as(CLASSES[label], clean, rng)
        damage = psnr(to_uint8(clean), img, data_range=255)
        features = degradation_features(img)
        if features is None:
            continue
        x.append(feature_vector(features))
        y.append(label)
        groups.append(g)
        db.append(damage)
        if (i + 1) % 250 == 0:
            log(f"stream {seed}: {i + 1} samples, {time.process_time() - t0:.0f} CPU-s")
    return np.array(x).reshape(-1, len(INPUTS)), np.array(y, int), np.array(groups, int), np.array(db)


def candidates(seed: int) -> dict[str, Callable[[], Any]]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.tree import DecisionTreeClassifier

    return {
        "logistic": lambda: LogisticRegression(C=10.0, max_iter=5000),
        "mlp": lambda: MLPClassifier(hidden_layer_sizes=(8,), alpha=0.1, max_iter=4000, random_state=seed),
        "tree": lambda: DecisionTreeClassifier(max_depth=6, min_samples_leaf=8, random_state=seed),
    }


def cross_validate(x: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int) -> dict[str, dict]:
    """Per candidate: accuracy and recall per class over 5 folds grouped by photo."""
    from sklearn.model_selection import GroupKFold

    out = {}
    for name, make in candidates(seed).items():
        predicted = np.empty_like(y)
        for train, test in GroupKFold(n_splits=5).split(x, y, groups):
            fitted = _fit(make(), x[train], y[train])
            predicted[test] = np.argmax(fitted.probabilities(x[test]), axis=1)
        recall = {c: float(np.mean(predicted[y == k] == k)) for k, c in enumerate(CLASSES)}
        out[name] = {"accuracy": float(np.mean(predicted == y)), "recall": recall}
    return out


def _fit(model, x: np.ndarray, y: np.ndarray, card: dict | None = None) -> Router:
    """Fit ``model`` and export it as a :class:`Router`."""
    from sklearn.tree import DecisionTreeClassifier

    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    if isinstance(model, DecisionTreeClassifier):
        model.fit(x, y)
        t = model.tree_
        value = t.value[:, 0, :]
        counts = np.zeros((t.node_count, len(CLASSES)))
        counts[:, model.classes_] = value
        tree = {
            "left": t.children_left.tolist(),
            "right": t.children_right.tolist(),
            "feature": t.feature.tolist(),
            "threshold": t.threshold.tolist(),
            "value": counts.tolist(),
        }
        return Router("tree", CLASSES, INPUTS, tree=tree, card=card or {})
    model.fit((x - mean) / scale, y)
    if hasattr(model, "coefs_"):  # MLPClassifier
        layers = [{"weight": w.tolist(), "bias": b.tolist()} for w, b in zip(model.coefs_, model.intercepts_)]
    else:  # LogisticRegression: one softmax layer
        layers = [{"weight": model.coef_.T.tolist(), "bias": model.intercept_.tolist()}]
    if list(model.classes_) != list(range(len(CLASSES))):
        raise ValueError(f"Expected samples of every class {CLASSES}, but got classes {list(model.classes_)} instead.")
    return Router("mlp", CLASSES, INPUTS, mean=tuple(mean), scale=tuple(scale), layers=tuple(layers), card=card or {})


def fit_router(name: str, x: np.ndarray, y: np.ndarray, seed: int, card: dict) -> Router:
    """The candidate ``name`` fitted on every sample."""
    return _fit(candidates(seed)[name](), x, y, card)


def load_photos(folder: Path) -> dict[str, np.ndarray]:
    from PIL import Image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise FileNotFoundError(
            f"Expected training photos in {folder} (python jobs/prepare_photos.py), but found none."
        )
    return {p.name: np.asarray(Image.open(p).convert("RGB")) for p in files}
