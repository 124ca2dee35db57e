//! Checks of single configuration values, each returning a typed error
//! that names the field and the value.

use crate::alloc_prelude::*;
use crate::error::ConfigError;

/// A `[min, max]` range: two finite values, `0 <= min <= max`; with
/// `integer`, both whole numbers.
pub(super) fn range(field: &str, values: &[f64], integer: bool) -> Result<(f64, f64), ConfigError> {
    let shown = || format!("{values:?}");
    let [min, max] = values else {
        return Err(ConfigError::invalid(
            field,
            shown(),
            "must be [min, max] (two values)",
        ));
    };
    if !min.is_finite() || !max.is_finite() || *min < 0.0 {
        return Err(ConfigError::invalid(
            field,
            shown(),
            "must be finite with min >= 0",
        ));
    }
    if min > max {
        return Err(ConfigError::invalid(field, shown(), "min must be <= max"));
    }
    if integer && (libm::trunc(*min) != *min || libm::trunc(*max) != *max) {
        return Err(ConfigError::invalid(
            field,
            shown(),
            "must hold whole numbers",
        ));
    }
    Ok((*min, *max))
}

/// A `[mean, std]` pair of finite, non-negative values.
pub(super) fn mean_std(field: &str, values: &[f64]) -> Result<(f64, f64), ConfigError> {
    match values {
        [mean, std] if mean.is_finite() && std.is_finite() && *mean >= 0.0 && *std >= 0.0 => {
            Ok((*mean, *std))
        }
        _ => Err(ConfigError::invalid(
            field,
            format!("{values:?}"),
            "must be [mean, std] with finite values >= 0",
        )),
    }
}

/// A finite value strictly above 0.
pub(super) fn positive(field: &str, value: f64) -> Result<f64, ConfigError> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(ConfigError::invalid(field, value, "must be finite and > 0"))
    }
}

/// A finite value at least 0.
pub(super) fn non_negative(field: &str, value: f64) -> Result<f64, ConfigError> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(ConfigError::invalid(
            field,
            value,
            "must be finite and >= 0",
        ))
    }
}

/// A per-step trace: exactly `max_steps` values, each satisfying `valid`
/// (described by `requirement`, e.g. "must be finite and > 0").
pub(super) fn trace<T: core::fmt::Display>(
    field: &str,
    trace: &[T],
    max_steps: usize,
    valid: impl Fn(&T) -> bool,
    requirement: &str,
) -> Result<(), ConfigError> {
    if trace.len() != max_steps {
        return Err(ConfigError::invalid(
            field,
            format!("{} values", trace.len()),
            format!("must hold max_steps = {max_steps} values"),
        ));
    }
    match trace.iter().enumerate().find(|(_, v)| !valid(v)) {
        Some((step, v)) => Err(ConfigError::invalid(
            format!("{field}[{step}]"),
            v,
            requirement,
        )),
        None => Ok(()),
    }
}
