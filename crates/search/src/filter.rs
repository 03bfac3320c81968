//! The filter language: parsed against a schema (errors name the path), evaluated over the payload
//! indexes to a bitmap of matching rows.
//!
//! ```json
//! {"must": [{"key": "author", "match": "ann"}, {"key": "tags", "match": {"any": ["a", "b"]}},
//!           {"key": "rank", "range": {"gte": 1, "lte": 5000}}],
//!  "should": [...], "must_not": [{"key": "price", "exists": true}]}
//! ```
//! plus the shorthand `{"author": "ann", "rank": 3}` (equality on each key). `should`: at least one
//! clause matches; `must_not`: none matches; a missing field matches no `match`/`range` clause and
//! only `{"exists": false}`.

use std::ops::Bound;

use serde_json::Value;

use crate::{
    doc::{kind, parse_datetime, parse_field, FieldValue},
    error::invalid,
    schema::{FieldType, Schema},
    Result,
};

/// Deepest nesting of must/should/must_not.
pub const DEPTH_MAX: usize = 16;
/// Most conditions in one filter.
pub const CONDITIONS_MAX: usize = 1024;

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Every clause matches (also the shorthand).
    Must(Vec<Filter>),
    /// At least one clause matches.
    Should(Vec<Filter>),
    /// No clause matches.
    MustNot(Vec<Filter>),
    /// One condition on one field.
    Cond(Cond),
}

/// A condition on one field.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// The keyword field holds one of these strings.
    Keyword {
        /// The field.
        field: String,
        /// Any of these values matches.
        any: Vec<String>,
    },
    /// The bool field is this.
    Bool {
        /// The field.
        field: String,
        /// The value it must hold.
        value: bool,
    },
    /// The numeric or datetime field lies in this range (equality is a one-point range).
    Range {
        /// The field.
        field: String,
        /// Lower bound (datetimes as epoch ms).
        lo: Bound<f64>,
        /// Upper bound.
        hi: Bound<f64>,
    },
    /// The field is present (true) or absent (false).
    Exists {
        /// The field.
        field: String,
        /// Present (true) or absent (false).
        exists: bool,
    },
}

/// `YYYY`, `YYYY-MM` or `YYYY-MM-DD` as the epoch-ms period [start, start of the next), UTC.
pub fn period(s: &str) -> Option<(i64, i64)> {
    use time::{Date, Month};
    const DAY_MS: i64 = 86_400_000;
    let ms = |d: Date| d.midnight().assume_utc().unix_timestamp() * 1000;
    let num = |x: &str, n: usize| -> Option<i32> {
        (x.len() == n && x.bytes().all(|b| b.is_ascii_digit())).then(|| x.parse().ok())?
    };
    // The end is the period's last day + one day in milliseconds, not the first day of the next
    // period as a date: the year after 9999 is not a date, and 9999 is as valid as 0000.
    let parts: Vec<&str> = s.split('-').collect();
    match parts.as_slice() {
        [y] => {
            let y = num(y, 4)?;
            let a = Date::from_calendar_date(y, Month::January, 1).ok()?;
            let last = Date::from_calendar_date(y, Month::December, 31).ok()?;
            Some((ms(a), ms(last) + DAY_MS))
        }
        [y, m] => {
            let (y, m) = (num(y, 4)?, num(m, 2)?);
            let month = Month::try_from(u8::try_from(m).ok()?).ok()?;
            let a = Date::from_calendar_date(y, month, 1).ok()?;
            let last = Date::from_calendar_date(y, month, month.length(y)).ok()?;
            Some((ms(a), ms(last) + DAY_MS))
        }
        [y, m, d] => {
            let (y, m, d) = (num(y, 4)?, num(m, 2)?, num(d, 2)?);
            let month = Month::try_from(u8::try_from(m).ok()?).ok()?;
            let a = Date::from_calendar_date(y, month, u8::try_from(d).ok()?).ok()?;
            Some((ms(a), ms(a) + DAY_MS))
        }
        _ => None,
    }
}

struct Parser<'a> {
    schema: &'a Schema,
    conditions: usize,
}

fn err(path: &str, m: impl Into<String>) -> crate::Error {
    invalid("invalid_filter", path, m)
}

impl Filter {
    /// Parses `v` (at `path`, e.g. `filter`) against `schema`.
    pub fn parse(v: &Value, schema: &Schema, path: &str) -> Result<Filter> {
        Parser {
            schema,
            conditions: 0,
        }
        .node(v, path, 0)
    }
}

impl Parser<'_> {
    fn node(&mut self, v: &Value, path: &str, depth: usize) -> Result<Filter> {
        if depth > DEPTH_MAX {
            return Err(err(path, format!("filters nest at most {DEPTH_MAX} deep")));
        }
        let Value::Object(o) = v else {
            return Err(err(
                path,
                format!("a filter is a JSON object, got {}", kind(v)),
            ));
        };
        let clause_keys = ["must", "should", "must_not"];
        if o.keys().any(|k| clause_keys.contains(&k.as_str())) {
            let mut parts = Vec::new();
            for (k, val) in o {
                let kp = format!("{path}.{k}");
                if !clause_keys.contains(&k.as_str()) {
                    return Err(err(&kp, "unknown key next to must/should/must_not"));
                }
                let items: Vec<&Value> = match val {
                    Value::Array(a) => a.iter().collect(),
                    Value::Object(_) => vec![val],
                    other => {
                        return Err(err(
                            &kp,
                            format!("expected an array of conditions, got {}", kind(other)),
                        ))
                    }
                };
                let mut subs = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    subs.push(self.node(item, &format!("{kp}[{i}]"), depth + 1)?);
                }
                parts.push(match k.as_str() {
                    "must" => Filter::Must(subs),
                    "should" => Filter::Should(subs),
                    _ => Filter::MustNot(subs),
                });
            }
            return Ok(if parts.len() == 1 {
                parts.pop().expect("one part")
            } else {
                Filter::Must(parts)
            });
        }
        if o.contains_key("key") {
            return self.cond(o, path).map(Filter::Cond);
        }
        // Shorthand: equality on each key.
        let mut subs = Vec::with_capacity(o.len());
        for (k, val) in o {
            let kp = format!("{path}.{k}");
            self.count(&kp)?;
            let ty = self.field(k, &kp)?;
            subs.push(Filter::Cond(self.equal(k, ty, val, &kp)?));
        }
        Ok(Filter::Must(subs))
    }

    fn count(&mut self, path: &str) -> Result<()> {
        self.conditions += 1;
        if self.conditions > CONDITIONS_MAX {
            return Err(err(
                path,
                format!("at most {CONDITIONS_MAX} conditions per filter"),
            ));
        }
        Ok(())
    }

    fn field(&self, name: &str, path: &str) -> Result<FieldType> {
        self.schema.fields.get(name).copied().ok_or_else(|| {
            invalid(
                "unknown_field",
                path,
                format!("{name:?} is not a field of the collection's schema"),
            )
        })
    }

    fn cond(&mut self, o: &serde_json::Map<String, Value>, path: &str) -> Result<Cond> {
        self.count(path)?;
        let field = match o.get("key") {
            Some(Value::String(s)) => s.clone(),
            _ => return Err(err(&format!("{path}.key"), "key must be a field name")),
        };
        let ty = self.field(&field, &format!("{path}.key"))?;
        let ops: Vec<&String> = o.keys().filter(|k| *k != "key").collect();
        let [op] = ops.as_slice() else {
            return Err(err(
                path,
                "a condition has key and exactly one of match, range, exists",
            ));
        };
        let op_path = format!("{path}.{op}");
        let val = &o[op.as_str()];
        match op.as_str() {
            "match" => match val {
                Value::Object(m) if m.contains_key("any") && m.len() == 1 => {
                    let Value::Array(a) = &m["any"] else {
                        return Err(err(&format!("{op_path}.any"), "any takes an array"));
                    };
                    self.any(&field, ty, a, &format!("{op_path}.any"))
                }
                Value::Object(m) if m.contains_key("value") && m.len() == 1 => {
                    self.equal(&field, ty, &m["value"], &op_path)
                }
                Value::Object(_) => Err(err(
                    &op_path,
                    "match takes a value, {\"value\": v} or {\"any\": [..]}",
                )),
                v => self.equal(&field, ty, v, &op_path),
            },
            "range" => {
                if !matches!(
                    ty,
                    FieldType::Integer | FieldType::Float | FieldType::Datetime
                ) {
                    return Err(invalid(
                        "invalid_filter",
                        op_path,
                        format!("range needs a number or datetime field; {field:?} is {ty:?}")
                            .to_lowercase(),
                    ));
                }
                let Value::Object(r) = val else {
                    return Err(err(&op_path, "range is an object of gt, gte, lt, lte"));
                };
                let (mut lo, mut hi) = (Bound::Unbounded, Bound::Unbounded);
                for (k, b) in r {
                    let bp = format!("{op_path}.{k}");
                    let x = if ty == FieldType::Datetime {
                        parse_datetime(b, &bp)? as f64
                    } else {
                        b.as_f64().filter(|f| f.is_finite()).ok_or_else(|| {
                            err(&bp, format!("expected a number, got {}", kind(b)))
                        })?
                    };
                    match k.as_str() {
                        "gt" => lo = Bound::Excluded(x),
                        "gte" => lo = Bound::Included(x),
                        "lt" => hi = Bound::Excluded(x),
                        "lte" => hi = Bound::Included(x),
                        _ => return Err(err(&bp, "range bounds are gt, gte, lt, lte")),
                    }
                }
                Ok(Cond::Range { field, lo, hi })
            }
            "exists" => match val {
                Value::Bool(b) => Ok(Cond::Exists { field, exists: *b }),
                other => Err(err(
                    &op_path,
                    format!("exists takes true or false, got {}", kind(other)),
                )),
            },
            _ => Err(err(&op_path, "unknown operator (match, range, exists)")),
        }
    }

    fn any(&mut self, field: &str, ty: FieldType, vals: &[Value], path: &str) -> Result<Cond> {
        match ty {
            FieldType::Keyword => {
                let mut any = Vec::with_capacity(vals.len());
                for (i, v) in vals.iter().enumerate() {
                    match v {
                        Value::String(s) => any.push(s.clone()),
                        other => {
                            return Err(invalid(
                                "invalid_filter",
                                format!("{path}[{i}]"),
                                format!("expected a string, got {}", kind(other)),
                            ))
                        }
                    }
                }
                Ok(Cond::Keyword {
                    field: field.to_owned(),
                    any,
                })
            }
            _ => Err(err(
                path,
                format!("any is for keyword fields; {field:?} is {ty:?}").to_lowercase(),
            )),
        }
    }

    fn equal(&mut self, field: &str, ty: FieldType, v: &Value, path: &str) -> Result<Cond> {
        if ty == FieldType::Datetime {
            if let Some((from, to)) = v.as_str().and_then(period) {
                // A bare year, year-month or date means that whole period (UTC).
                return Ok(Cond::Range {
                    field: field.to_owned(),
                    lo: Bound::Included(from as f64),
                    hi: Bound::Excluded(to as f64),
                });
            }
        }
        if ty == FieldType::Keyword {
            if let Value::Array(a) = v {
                return self.any(field, ty, a, path);
            }
        }
        let f = parse_field(ty, v, path).map_err(|e| match e {
            crate::Error::Invalid { path, message, .. } => invalid("invalid_filter", path, message),
            e => e,
        })?;
        let field = field.to_owned();
        Ok(match f {
            FieldValue::Keyword(any) => Cond::Keyword { field, any },
            FieldValue::Bool(value) => Cond::Bool { field, value },
            other => {
                let x = other.number().expect("numeric field");
                Cond::Range {
                    field,
                    lo: Bound::Included(x),
                    hi: Bound::Included(x),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::period;

    #[test]
    fn the_first_and_last_representable_years_are_periods_alike() {
        let (a, b) = period("0000").unwrap();
        assert_eq!(b - a, 366 * 86_400_000); // year 0 is a leap year
        let (a, b) = period("9999").unwrap();
        assert_eq!(b - a, 365 * 86_400_000);
        let (a, b) = period("9999-12").unwrap();
        assert_eq!(b - a, 31 * 86_400_000);
        let (a, b) = period("9999-12-31").unwrap();
        assert_eq!(b - a, 86_400_000);
    }

    #[test]
    fn datetime_bounds_beyond_2_pow_53_are_refused_on_both_sides() {
        use crate::doc::parse_datetime;
        for v in [
            i64::MIN,
            i64::MIN + 1,
            -(1 << 53) - 1,
            (1 << 53) + 1,
            i64::MAX,
        ] {
            assert!(parse_datetime(&serde_json::json!(v), "f").is_err(), "{v}");
        }
        for v in [-(1i64 << 53), 1 << 53, 0] {
            assert!(parse_datetime(&serde_json::json!(v), "f").is_ok(), "{v}");
        }
    }

    #[test]
    fn periods_cover_the_whole_year_month_or_day() {
        // 2024 is a leap year: 366 days.
        let (a, b) = period("2024").unwrap();
        assert_eq!(a, 1_704_067_200_000);
        assert_eq!(b - a, 366 * 86_400_000);
        let (a, b) = period("2024-02").unwrap();
        assert_eq!(a, 1_706_745_600_000);
        assert_eq!(b - a, 29 * 86_400_000);
        let (a, b) = period("2023-12").unwrap();
        assert_eq!(b - a, 31 * 86_400_000);
        assert_eq!(b, period("2024").unwrap().0);
        let (a, b) = period("2024-03-05").unwrap();
        assert_eq!(b - a, 86_400_000);
        for bad in [
            "24",
            "2024-2",
            "2024-13",
            "2024-02-30",
            "2024-01-01T00:00:00Z",
            "abcd",
            "",
        ] {
            assert_eq!(period(bad), None, "{bad}");
        }
    }
}
