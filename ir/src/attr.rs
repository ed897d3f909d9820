//! Attribute values as they appear in the text form, and the conversions between them and typed op fields.
use crate::types::{fmt_f32, DType};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    Int(i64),
    Float(f32),
    Bool(bool),
    Str(String),
    Ints(Vec<i64>),
    Floats(Vec<f32>),
}

impl fmt::Display for AttrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttrValue::Int(i) => write!(f, "{i}"),
            AttrValue::Float(x) => f.write_str(&fmt_f32(*x)),
            AttrValue::Bool(b) => write!(f, "{b}"),
            AttrValue::Str(s) => write!(f, "{}", quote(s)),
            AttrValue::Ints(v) => {
                let s: Vec<String> = v.iter().map(|x| x.to_string()).collect();
                write!(f, "[{}]", s.join(", "))
            }
            AttrValue::Floats(v) => {
                let s: Vec<String> = v.iter().map(|x| fmt_f32(*x)).collect();
                // An empty float list must stay distinguishable from an int list when parsed back.
                if v.is_empty() {
                    f.write_str("[]f")
                } else {
                    write!(f, "[{}]", s.join(", "))
                }
            }
        }
    }
}

/// Quotes a string for the text form (escapes `"` and `\` and control characters).
pub fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A typed op field that converts to and from an attribute.
pub trait Attr: Sized {
    fn to_attr(&self) -> Option<AttrValue>;
    fn from_attr(v: Option<AttrValue>) -> Result<Self, String>;
}

fn missing<T>() -> Result<T, String> {
    Err("missing attribute".into())
}

impl Attr for i64 {
    fn to_attr(&self) -> Option<AttrValue> {
        Some(AttrValue::Int(*self))
    }
    fn from_attr(v: Option<AttrValue>) -> Result<Self, String> {
        match v {
            Some(AttrValue::Int(i)) => Ok(i),
            None => missing(),
            Some(o) => Err(format!("expected an integer, found {o}")),
        }
    }
}

impl Attr for f32 {
    fn to_attr(&self) -> Option<AttrValue> {
        Some(AttrValue::Float(*self))
    }
    fn from_attr(v: Option<AttrValue>) -> Result<Self, String> {
        match v {
            Some(AttrValue::Float(x)) => Ok(x),
            Some(AttrValue::Int(i)) => Ok(i as f32),
            None => missing(),
            Some(o) => Err(format!("expected a float, found {o}")),
        }
    }
}

impl Attr for bool {
    fn to_attr(&self) -> Option<AttrValue> {
        Some(AttrValue::Bool(*self))
    }
    fn from_attr(v: Option<AttrValue>) -> Result<Self, String> {
        match v {
            Some(AttrValue::Bool(b)) => Ok(b),
            None => missing(),
            Some(o) => Err(format!("expected true or false, found {o}")),
        }
    }
}

impl Attr for String {
    fn to_attr(&self) -> Option<AttrValue> {
        Some(AttrValue::Str(self.clone()))
    }
    fn from_attr(v: Option<AttrValue>) -> Result<Self, String> {
        match v {
            Some(AttrValue::Str(s)) => Ok(s),
            None => missing(),
            Some(o) => Err(format!("expected a string, found {o}")),
        }
    }
}

impl Attr for Vec<i64> {
    fn to_attr(&self) -> Option<AttrValue> {
        Some(AttrValue::Ints(self.clone()))
    }
    fn from_attr(v: Option<AttrValue>) -> Result<Self, String> {
        match v {
            Some(AttrValue::Ints(v)) => Ok(v),
            None => missing(),
            Some(o) => Err(format!("expected a list of integers, found {o}")),
        }
    }
}

impl Attr for Vec<f32> {
    fn to_attr(&self) -> Option<AttrValue> {
        Some(AttrValue::Floats(self.clone()))
    }
    fn from_attr(v: Option<AttrValue>) -> Result<Self, String> {
        match v {
            Some(AttrValue::Floats(v)) => Ok(v),
            Some(AttrValue::Ints(v)) => Ok(v.into_iter().map(|x| x as f32).collect()),
            None => missing(),
            Some(o) => Err(format!("expected a list of floats, found {o}")),
        }
    }
}

impl<T: Attr> Attr for Option<T> {
    fn to_attr(&self) -> Option<AttrValue> {
        self.as_ref().and_then(|x| x.to_attr())
    }
    fn from_attr(v: Option<AttrValue>) -> Result<Self, String> {
        match v {
            None => Ok(None),
            v => T::from_attr(v).map(Some),
        }
    }
}

impl Attr for DType {
    fn to_attr(&self) -> Option<AttrValue> {
        Some(AttrValue::Str(self.name().into()))
    }
    fn from_attr(v: Option<AttrValue>) -> Result<Self, String> {
        let s = String::from_attr(v)?;
        DType::from_name(&s).ok_or_else(|| format!("unknown element type {s:?}"))
    }
}

/// Declares a string-valued enum attribute with its spellings.
#[macro_export]
macro_rules! str_enum {
    ($(#[$m:meta])* $name:ident { $($v:ident = $s:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($v),* }
        impl $name {
            pub fn as_str(self) -> &'static str { match self { $($name::$v => $s),* } }
            pub fn parse(s: &str) -> Option<Self> { match s { $($s => Some($name::$v),)* _ => None } }
        }
        impl $crate::attr::Attr for $name {
            fn to_attr(&self) -> Option<$crate::attr::AttrValue> { Some($crate::attr::AttrValue::Str(self.as_str().into())) }
            fn from_attr(v: Option<$crate::attr::AttrValue>) -> Result<Self, String> {
                let s = String::from_attr(v)?;
                $name::parse(&s).ok_or_else(|| format!("unknown {} {:?}", stringify!($name), s))
            }
        }
    };
}

/// Attributes parsed from text, consumed field by field while an op is built.
#[derive(Default, Debug)]
pub struct AttrMap(pub BTreeMap<String, AttrValue>);

impl AttrMap {
    pub fn take<T: Attr>(&mut self, key: &str) -> Result<T, String> {
        T::from_attr(self.0.remove(key)).map_err(|e| format!("attribute `{key}`: {e}"))
    }
    /// Errors on attributes no field consumed.
    pub fn finish(self, op: &str) -> Result<(), String> {
        match self.0.keys().next() {
            Some(k) => Err(format!("op `{op}` has no attribute `{k}`")),
            None => Ok(()),
        }
    }
}
