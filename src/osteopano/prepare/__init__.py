"""The one preparation chain: model spec, intensity recipe, ROI crops, covariates, pixel spacing."""
