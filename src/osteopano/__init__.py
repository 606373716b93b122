"""osteopano: screen dental panoramic radiographs for signs of osteoporosis.

A research and screening aid, not a diagnosis.
"""

__version__ = "0.1.0"


def load(path=None, **kw):
    """A ready ``Screener`` for a run folder or an .onnx file (see ``osteopano.screen.screener.load``).

    ``m = osteopano.load(PATH, engine="auto"|"torch"|"onnx", threshold=None, measure=False)``; then
    ``m.predict(path_or_array_or_Radiograph, heatmap=False)``, ``m.predict_batch(...)``, ``m.card``,
    ``m.model_id``, ``m.spec``. ``osteopano.load()`` without a model measures the cortex only.
    Imported lazily: ``import osteopano`` stays light and torch-free.
    """
    from osteopano.screen.screener import load as _load

    return _load(path, **kw)
