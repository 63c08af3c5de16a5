//! Integer fields as JSON Schema reads them: `5.0` is the integer 5 (an `integer` in the
//! OpenAPI document admits it), where serde's derived `i64`/`u64` refuse any number written
//! with a fraction part. Used with `#[serde(deserialize_with = ...)]` on the request fields the
//! document calls integers; a value with a non-zero fraction, or out of the type's range, is
//! still refused, naming what was sent.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, Visitor};

/// An integer of type `T`, written as `5` or `5.0`.
pub fn exact<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64> + TryFrom<u64>,
{
    deserializer.deserialize_any(Exact(PhantomData))
}

/// `null` or absent as `None`, else as [`exact`].
pub fn optional<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64> + TryFrom<u64>,
{
    struct Maybe<T>(PhantomData<T>);
    impl<'de, T: TryFrom<i64> + TryFrom<u64>> Visitor<'de> for Maybe<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an integer or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
            exact(d).map(Some)
        }
    }
    deserializer.deserialize_option(Maybe(PhantomData))
}

struct Exact<T>(PhantomData<T>);

impl<T: TryFrom<i64> + TryFrom<u64>> Visitor<'_> for Exact<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::custom(format!("{v} is out of range")))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::custom(format!("{v} is out of range")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        // 2^63 as f64 is exact; anything from there up does not fit an i64.
        if v.fract() != 0.0 || !v.is_finite() || v.abs() >= 9_223_372_036_854_775_808.0 {
            return Err(E::custom(format!("{v} is not an integer in range")));
        }
        self.visit_i64(v as i64)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize, Debug, PartialEq)]
    struct Body {
        #[serde(deserialize_with = "super::exact")]
        n: i64,
        #[serde(default, deserialize_with = "super::optional")]
        m: Option<u32>,
    }

    fn parse(json: &str) -> Result<Body, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn integers_written_with_a_zero_fraction_are_integers() {
        assert_eq!(parse(r#"{"n": 5, "m": 7}"#), Ok(Body { n: 5, m: Some(7) }));
        assert_eq!(parse(r#"{"n": -6224.0, "m": 7.0}"#), Ok(Body { n: -6224, m: Some(7) }));
        assert_eq!(parse(r#"{"n": 1, "m": null}"#), Ok(Body { n: 1, m: None }));
        assert_eq!(parse(r#"{"n": 1}"#), Ok(Body { n: 1, m: None }));
    }

    #[test]
    fn fractions_strings_and_out_of_range_values_are_refused() {
        assert!(parse(r#"{"n": 5.5}"#).unwrap_err().contains("5.5 is not an integer"));
        assert!(parse(r#"{"n": "5"}"#).unwrap_err().contains("expected an integer"));
        assert!(parse(r#"{"n": 1e300}"#).is_err());
        assert!(parse(r#"{"n": 1, "m": -1}"#).unwrap_err().contains("-1 is out of range"));
        assert!(parse(r#"{"n": 1, "m": 4294967296}"#).unwrap_err().contains("out of range"));
    }
}
