//! Readings on the wire are `value × 10^exponent`, an i32 and an i8:
//! 21.5 °C is 215 and −1. [`to_decimal`] picks the exponent that keeps
//! the most of the reading's decimal digits the i32 can hold.

/// The largest number of decimal places tried: a sensor reading with more
/// than nine is noise.
const MAX_PLACES: i8 = 9;

/// A reading as mantissa and decimal exponent, or `None` for NaN and the
/// infinities, which have no decimal form.
pub fn to_decimal(reading: f64) -> Option<(i32, i8)> {
    if !reading.is_finite() {
        return None;
    }
    // Large values: drop digits until the mantissa fits.
    let mut exponent: i8 = 0;
    while (reading / 10f64.powi(i32::from(exponent))).round().abs() > f64::from(i32::MAX) {
        exponent += 1;
    }
    if exponent > 0 {
        let mantissa = (reading / 10f64.powi(i32::from(exponent))).round() as i32;
        return Some((mantissa, exponent));
    }
    // Otherwise: the fewest places that represent it exactly, or else as
    // many as fit.
    let mut best = (reading.round() as i32, 0);
    for places in 0..=MAX_PLACES {
        let scaled = reading * 10f64.powi(i32::from(places));
        if scaled.round().abs() > f64::from(i32::MAX) {
            break;
        }
        best = (scaled.round() as i32, -places);
        if (scaled - scaled.round()).abs() <= 1e-9 * scaled.abs().max(1.0) {
            break;
        }
    }
    Some(best)
}

/// The number a mantissa and exponent stand for.
pub fn from_decimal(value: i32, exponent: i8) -> f64 {
    f64::from(value) * 10f64.powi(i32::from(exponent))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn readings_keep_their_decimal_digits() {
        assert_eq!(to_decimal(21.5), Some((215, -1)));
        assert_eq!(to_decimal(-3.25), Some((-325, -2)));
        assert_eq!(to_decimal(1.0), Some((1, 0)));
        assert_eq!(to_decimal(0.0), Some((0, 0)));
        assert_eq!(to_decimal(1013.2), Some((10132, -1)));
        assert_eq!(to_decimal(1e12), Some((1_000_000_000, 3)));
        assert_eq!(to_decimal(f64::NAN), None);
        assert_eq!(to_decimal(f64::INFINITY), None);
    }

    proptest! {
        #[test]
        fn a_decimal_is_close_to_its_reading(reading in -1e15f64..1e15) {
            let (value, exponent) = to_decimal(reading).unwrap();
            let back = from_decimal(value, exponent);
            // Within half a unit of the last place kept.
            let unit = 10f64.powi(i32::from(exponent));
            prop_assert!((back - reading).abs() <= unit / 2.0 + reading.abs() * 1e-12,
                "{reading} -> {value}e{exponent} = {back}");
        }
    }
}
