"""PACS in and out: DICOMweb pull (``dicomweb``), a DIMSE C-STORE receiver (``listener``), and the
per-image screening they share (``screening``)."""
