"""The API's JSON shapes and documented error statuses (they feed ``/openapi.json`` and ``/docs``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ScreenResponse(BaseModel):
    probability: float = Field(description="Model score in [0, 1]: the estimated probability of osteoporosis")
    decision: bool = Field(description="True = refer for DXA (probability >= threshold)")
    decision_text: str = Field(description="The decision in words")
    threshold: float = Field(description="The model's decision threshold")
    model_id: str = Field(description="Names the exact model weights")
    heatmap_png_base64: str | None = Field(None, description="Grad-CAM heatmap, 8-bit grey PNG at the "
                                           "image's size (with ?heatmap=true, torch engine)")
    heatmap_note: str | None = Field(None, description="Why no heatmap was returned, when one was asked for")
    filename: str | None = Field(None, description="The uploaded file's name, as sent")
    synthetic_training_data: bool | None = Field(None, description="True when the model was trained on "
                                                 "synthetic phantoms (results are not clinical evidence)")
    disclaimer: str


class ModelScore(BaseModel):
    probability: float = Field(description="Model score in [0, 1]")
    decision: bool = Field(description="True = refer for DXA (probability >= threshold)")
    decision_text: str = Field(description="The model's decision in words")
    threshold: float = Field(description="The model's decision threshold")
    model_id: str = Field(description="Names the exact model weights")


class MeasureResponse(BaseModel):
    filename: str | None = Field(None, description="The uploaded file's name, as sent")
    pixel_spacing_mm: float | None = Field(None, description="mm per pixel used (None: unknown, widths in px)")
    spacing_source: str = Field(description="Where the spacing came from: option (the form field), file or unknown")
    mcw_mm: float | None = Field(None, description="Mean mandibular cortical width in mm (None when the "
                                 "spacing is unknown or the measurement failed)")
    mcw_px: float | None = Field(None, description="Mean mandibular cortical width in pixels")
    quality: str = Field(description="ok | low (check by eye) | failed")
    decision: bool | None = Field(None, description="Classical decision: True = MCW below the threshold (refer "
                                  "for DXA); None when it cannot be made (spacing unknown, measurement failed)")
    decision_text: str = Field(description="The classical decision in words")
    threshold_mm: float = Field(description="The classical MCW threshold in mm")
    sides: list[dict[str, Any]] = Field(description="Per side (patient's right, left): located, mcw_mm, mcw_px, "
                                        "width_text, confidence and plain-language quality reasons")
    notes: list[str] = Field(description="The measurement's notes (why quality is low or failed)")
    texts: dict[str, str] = Field(description="Plain-language paragraphs: 'dentist' and 'patient'")
    measurement: dict[str, Any] = Field(description="The full measurement: every column of `osteopano measure` "
                                        "and per side the traced border and endosteal margin as polylines "
                                        "(x, y in input pixels, about one point per mm)")
    model: ModelScore | None = Field(None, description="The model's score, when the server runs a model")
    disclaimer: str


class ErrorResponse(BaseModel):
    detail: str


ERRORS = {
    400: "Not a multipart upload with a 'file' field, or a bad form field.",
    403: "The request came from another site (Origin check).",
    408: "The upload was not received within the server's body timeout.",
    409: "This server cannot do that (e.g. /api/v1/screen without a model).",
    413: "The upload is larger than the limit.",
    415: "The content is not a PNG, JPEG, TIFF, BMP or DICOM image.",
    422: "The image could not be decoded or screened (the reason is given).",
    503: "Too many screenings in flight; retry after the Retry-After seconds.",
    504: "The screening took longer than the server's timeout.",
}
UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {"file": {"type": "string", "format": "binary",
                            "description": "Panoramic radiograph: PNG, JPEG, TIFF, BMP or DICOM"},
                   "pixel_spacing_mm": {"type": "number",
                                        "description": "Optional: mm per pixel, when the file does not say "
                                                       "(widths are then in mm and the decision is made)"}}}}}}}
