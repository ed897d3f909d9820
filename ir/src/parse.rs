//! Parser for the text form. Values must be defined before they are used, so a parsed graph is acyclic
//! by construction; types are taken as written and checked by the verifier.
use crate::attr::{AttrMap, AttrValue};
use crate::graph::{ConstData, Graph, ValueId};
use crate::op::Op;
use crate::tensor::Tensor;
use crate::types::{DType, ElemType, QParams, QuantType, Type};
use ndarray::{ArrayD, IxDyn};
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {msg}")]
pub struct ParseError {
    pub line: usize,
    pub msg: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Value(String),
    Global(String),
    Num(String),
    Hex(u64),
    Str(String),
    P(&'static str),
}

/// Lexes the string literal starting at the quote at byte `i`; returns it and the byte after it.
fn lex_str(src: &str, mut i: usize, line: usize) -> Result<(String, usize), ParseError> {
    let err = |msg: &str| ParseError { line, msg: msg.into() };
    let mut s = String::new();
    i += 1;
    loop {
        let ch = src.get(i..).and_then(|r| r.chars().next()).ok_or_else(|| err("unterminated string"))?;
        i += ch.len_utf8();
        match ch {
            '"' => return Ok((s, i)),
            '\n' => return Err(err("unterminated string")),
            '\\' => {
                let e = src.get(i..).and_then(|r| r.chars().next()).ok_or_else(|| err("unterminated string"))?;
                i += e.len_utf8();
                match e {
                    '"' => s.push('"'),
                    '\\' => s.push('\\'),
                    'n' => s.push('\n'),
                    'u' => {
                        let rest = &src[i..];
                        let close = rest.find('}').ok_or_else(|| err("bad \\u escape"))?;
                        let code = u32::from_str_radix(rest[..close].trim_start_matches('{'), 16)
                            .ok()
                            .and_then(char::from_u32)
                            .ok_or_else(|| err("bad \\u escape"))?;
                        s.push(code);
                        i += close + 1;
                    }
                    e => return Err(err(&format!("unknown escape \\{e}"))),
                }
            }
            ch => s.push(ch),
        }
    }
}

fn lex(src: &str) -> Result<Vec<(Tok, usize)>, ParseError> {
    let b = src.as_bytes();
    let mut i = 0;
    let mut line = 1;
    let mut out = Vec::new();
    let err = |line, msg: String| ParseError { line, msg };
    let is_id = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-';
    while i < b.len() {
        let c = b[i];
        match c {
            b'\n' => {
                line += 1;
                i += 1;
            }
            c if c.is_ascii_whitespace() => i += 1,
            b';' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' => {
                let (s, j) = lex_str(src, i, line)?;
                i = j;
                out.push((Tok::Str(s), line));
            }
            b'%' | b'@' => {
                let start = i + 1;
                if c == b'@' && b.get(start) == Some(&b'"') {
                    let (s, j) = lex_str(src, start, line)?;
                    i = j;
                    out.push((Tok::Global(s), line));
                    continue;
                }
                let mut j = start;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] == b'.') {
                    j += 1;
                }
                if j == start {
                    return Err(err(line, format!("`{}` must be followed by a name", c as char)));
                }
                let name = src[start..j].to_string();
                out.push((if c == b'%' { Tok::Value(name) } else { Tok::Global(name) }, line));
                i = j;
            }
            b'-' if b.get(i + 1) == Some(&b'>') => {
                out.push((Tok::P("->"), line));
                i += 2;
            }
            b'.' if b.get(i + 1) == Some(&b'.') => {
                out.push((Tok::P(".."), line));
                i += 2;
            }
            b'0' if b.get(i + 1) == Some(&b'x') => {
                let mut j = i + 2;
                while j < b.len() && b[j].is_ascii_hexdigit() {
                    j += 1;
                }
                let v = u64::from_str_radix(&src[i + 2..j], 16).map_err(|e| err(line, format!("bad hex number: {e}")))?;
                out.push((Tok::Hex(v), line));
                i = j;
            }
            c if c.is_ascii_digit() || c == b'-' || c == b'+' => {
                let mut j = i + 1;
                if src[j..].starts_with("inf") || src[j..].starts_with("NaN") {
                    j += 3;
                } else {
                    while j < b.len() && b[j].is_ascii_digit() {
                        j += 1;
                    }
                    if b.get(j) == Some(&b'.') && b.get(j + 1).is_some_and(|c| c.is_ascii_digit()) {
                        j += 1;
                        while j < b.len() && b[j].is_ascii_digit() {
                            j += 1;
                        }
                    }
                    if matches!(b.get(j), Some(b'e' | b'E')) {
                        j += 1;
                        if matches!(b.get(j), Some(b'-' | b'+')) {
                            j += 1;
                        }
                        while j < b.len() && b[j].is_ascii_digit() {
                            j += 1;
                        }
                    }
                }
                out.push((Tok::Num(src[i..j].to_string()), line));
                i = j;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let mut j = i;
                while j < b.len() && is_id(b[j]) && !(b[j] == b'-' && b.get(j + 1) == Some(&b'>')) {
                    j += 1;
                }
                out.push((Tok::Ident(src[i..j].to_string()), line));
                i = j;
            }
            _ => {
                let p = match c {
                    b'(' => "(",
                    b')' => ")",
                    b'[' => "[",
                    b']' => "]",
                    b'{' => "{",
                    b'}' => "}",
                    b'<' => "<",
                    b'>' => ">",
                    b',' => ",",
                    b':' => ":",
                    b'=' => "=",
                    b'?' => "?",
                    _ => return Err(err(line, format!("unexpected character `{}`", src[i..].chars().next().unwrap_or('?')))),
                };
                out.push((Tok::P(p), line));
                i += 1;
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    g: Graph,
    vals: HashMap<String, ValueId>,
}

impl Parser {
    fn line(&self) -> usize {
        self.toks.get(self.pos).or(self.toks.last()).map(|t| t.1).unwrap_or(1)
    }
    fn err<T>(&self, msg: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError { line: self.line(), msg: msg.into() })
    }
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.0)
    }
    fn next(&mut self) -> Result<Tok, ParseError> {
        let t = self.toks.get(self.pos).map(|t| t.0.clone());
        self.pos += 1;
        t.ok_or(ParseError { line: self.line(), msg: "unexpected end of input".into() })
    }
    fn is(&self, p: &str) -> bool {
        matches!(self.peek(), Some(Tok::P(q)) if *q == p) || matches!(self.peek(), Some(Tok::Ident(q)) if q == p)
    }
    fn eat(&mut self, p: &str) -> bool {
        if self.is(p) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, p: &str) -> Result<(), ParseError> {
        if self.eat(p) {
            Ok(())
        } else {
            let found = self.peek().map(|t| format!("{t:?}")).unwrap_or("end of input".into());
            self.err(format!("expected `{p}`, found {found}"))
        }
    }
    fn num<T: std::str::FromStr>(&mut self, what: &str) -> Result<T, ParseError> {
        match self.next()? {
            Tok::Num(s) => s.parse().or_else(|_| self.err(format!("bad {what} `{s}`"))),
            t => self.err(format!("expected {what}, found {t:?}")),
        }
    }
    fn float(&mut self) -> Result<f32, ParseError> {
        match self.peek() {
            Some(Tok::Ident(s)) if s == "NaN" || s == "inf" => {
                let s = s.clone();
                self.pos += 1;
                Ok(s.parse().unwrap_or(f32::NAN))
            }
            _ => self.num("number"),
        }
    }
    fn string(&mut self) -> Result<String, ParseError> {
        match self.next()? {
            Tok::Str(s) => Ok(s),
            t => self.err(format!("expected a string, found {t:?}")),
        }
    }
    fn list<T>(&mut self, mut item: impl FnMut(&mut Self) -> Result<T, ParseError>) -> Result<Vec<T>, ParseError> {
        self.expect("[")?;
        let mut v = Vec::new();
        if !self.eat("]") {
            loop {
                v.push(item(self)?);
                if self.eat("]") {
                    break;
                }
                self.expect(",")?;
            }
        }
        Ok(v)
    }

    fn ty(&mut self) -> Result<Type, ParseError> {
        if self.eat("?") {
            return Ok(Type::Unknown);
        }
        let dt = match self.next()? {
            Tok::Ident(s) => DType::from_name(&s).map_or_else(|| self.err(format!("unknown element type `{s}`")), Ok)?,
            t => return self.err(format!("expected a type, found {t:?}")),
        };
        let shape = self.list(|p| p.num::<usize>("dimension"))?;
        if crate::types::checked_numel(&shape).is_none() {
            return self.err(format!("shape {shape:?} has too many elements"));
        }
        if !self.eat("q") {
            return Ok(Type::plain(dt, shape));
        }
        self.expect("<")?;
        let params = if self.eat("axis") {
            let axis = self.num("axis")?;
            self.expect(",")?;
            let scales = self.list(|p| p.float())?;
            self.expect(",")?;
            let zps = self.list(|p| p.num::<i32>("zero point"))?;
            QParams::PerAxis { axis, scales, zps }
        } else if self.eat("calibrated") {
            let min = self.float()?;
            self.expect(",")?;
            QParams::Calibrated { min, max: self.float()? }
        } else {
            let scale = self.float()?;
            self.expect(",")?;
            QParams::PerTensor { scale, zp: self.num("zero point")? }
        };
        let mut q = QuantType::new(dt, params);
        if self.eat(",") {
            q.qmin = self.num("range start")?;
            self.expect("..")?;
            q.qmax = self.num("range end")?;
        }
        self.expect(">")?;
        Ok(Type::Tensor { elem: ElemType::Q(q), shape })
    }

    fn loc(&mut self) -> Result<Vec<String>, ParseError> {
        let mut v = Vec::new();
        if self.eat("loc") {
            self.expect("(")?;
            loop {
                v.push(self.string()?);
                if self.eat(")") {
                    break;
                }
                self.expect(",")?;
            }
        }
        Ok(v)
    }

    fn attr_value(&mut self) -> Result<AttrValue, ParseError> {
        match self.peek().cloned() {
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(AttrValue::Str(s))
            }
            Some(Tok::Ident(s)) if s == "true" || s == "false" => {
                self.pos += 1;
                Ok(AttrValue::Bool(s == "true"))
            }
            Some(Tok::P("[")) => {
                let items = self.list(|p| match p.next()? {
                    Tok::Num(s) => Ok(s),
                    Tok::Ident(s) if s == "NaN" || s == "inf" => Ok(s),
                    t => p.err(format!("expected a number, found {t:?}")),
                })?;
                let float = self.eat("f") || items.iter().any(|s| is_float_text(s));
                if float {
                    items
                        .iter()
                        .map(|s| s.parse().or_else(|_| self.err(format!("bad number `{s}`"))))
                        .collect::<Result<_, _>>()
                        .map(AttrValue::Floats)
                } else {
                    items
                        .iter()
                        .map(|s| s.parse().or_else(|_| self.err(format!("bad integer `{s}`"))))
                        .collect::<Result<_, _>>()
                        .map(AttrValue::Ints)
                }
            }
            Some(Tok::Num(s)) => {
                self.pos += 1;
                if is_float_text(&s) {
                    s.parse().map(AttrValue::Float).or_else(|_| self.err(format!("bad number `{s}`")))
                } else {
                    s.parse().map(AttrValue::Int).or_else(|_| self.err(format!("bad integer `{s}`")))
                }
            }
            t => self.err(format!("expected an attribute value, found {t:?}")),
        }
    }

    fn operand(&mut self) -> Result<ValueId, ParseError> {
        let key = match self.next()? {
            Tok::Value(n) => format!("%{n}"),
            Tok::Global(n) => format!("@{n}"),
            t => return self.err(format!("expected a value, found {t:?}")),
        };
        match self.vals.get(&key) {
            Some(v) => Ok(*v),
            None => self.err(format!("use of undefined value {key}")),
        }
    }

    fn define(&mut self, key: String, v: ValueId) -> Result<(), ParseError> {
        if self.vals.insert(key.clone(), v).is_some() {
            return self.err(format!("{key} is defined twice"));
        }
        Ok(())
    }

    fn const_body(&mut self, ty: &Type) -> Result<ConstData, ParseError> {
        let (dt, shape) = match ty {
            Type::Tensor { elem, shape } => (elem.storage(), shape.clone()),
            Type::Unknown => return self.err("a constant needs a known type"),
        };
        if self.eat("elided") {
            let bytes = self.num("byte count")?;
            let hash = match self.next()? {
                Tok::Hex(h) => h,
                t => return self.err(format!("expected a hash, found {t:?}")),
            };
            return Ok(ConstData::Elided { bytes, hash });
        }
        if self.eat("dense") {
            let h = self.string()?;
            let bytes = unhex(&h).map_or_else(|| self.err("bad hex data"), Ok)?;
            return Tensor::from_le_bytes(dt, &shape, &bytes)
                .map(ConstData::Data)
                .map_or_else(|| self.err(format!("{} bytes do not fill {ty}", bytes.len())), Ok);
        }
        let items = self.list(|p| match p.next()? {
            Tok::Num(s) | Tok::Ident(s) => Ok(s),
            t => p.err(format!("expected a number, found {t:?}")),
        })?;
        if items.len() != shape.iter().product::<usize>() {
            return self.err(format!("{} elements do not fill {ty}", items.len()));
        }
        let s = IxDyn(&shape);
        macro_rules! build {
            ($v:ident, $t:ty) => {{
                let v: Vec<$t> = items.iter().map(|x| x.parse()).collect::<Result<_, _>>().or_else(|_| self.err("bad constant element"))?;
                Tensor::$v(ArrayD::from_shape_vec(s, v).expect("length checked"))
            }};
        }
        Ok(ConstData::Data(match dt {
            DType::F32 => build!(F32, f32),
            DType::I64 => build!(I64, i64),
            DType::I32 => build!(I32, i32),
            DType::I16 => build!(I16, i16),
            DType::I8 => build!(I8, i8),
            DType::U8 => build!(U8, u8),
            DType::Bool => build!(Bool, bool),
        }))
    }

    fn graph(&mut self) -> Result<Graph, ParseError> {
        self.expect("graph")?;
        self.g.name = match self.next()? {
            Tok::Global(n) => n,
            t => return self.err(format!("expected the graph name, found {t:?}")),
        };
        self.expect("(")?;
        if !self.eat(")") {
            loop {
                let name = match self.next()? {
                    Tok::Value(n) => n,
                    t => return self.err(format!("expected an input value, found {t:?}")),
                };
                self.expect(":")?;
                let ty = self.ty()?;
                let onnx = if let Some(Tok::Str(_)) = self.peek() { Some(self.string()?) } else { None };
                let v = self.g.add_input(ty, onnx);
                self.define(format!("%{name}"), v)?;
                if self.eat(")") {
                    break;
                }
                self.expect(",")?;
            }
        }
        self.expect("->")?;
        self.expect("(")?;
        let mut outs = Vec::new();
        if !self.eat(")") {
            loop {
                let line = self.line();
                let key = match self.next()? {
                    Tok::Value(n) => format!("%{n}"),
                    Tok::Global(n) => format!("@{n}"),
                    t => return self.err(format!("expected an output value, found {t:?}")),
                };
                self.expect(":")?;
                let ty = self.ty()?;
                let onnx = if let Some(Tok::Str(_)) = self.peek() { Some(self.string()?) } else { None };
                outs.push((key, ty, onnx, line));
                if self.eat(")") {
                    break;
                }
                self.expect(",")?;
            }
        }
        self.expect("{")?;
        while !self.eat("}") {
            if self.eat("const") {
                let name = match self.next()? {
                    Tok::Global(n) => n,
                    t => return self.err(format!("expected a constant name, found {t:?}")),
                };
                self.expect(":")?;
                let ty = self.ty()?;
                self.expect("=")?;
                let line = self.line();
                let data = self.const_body(&ty).map_err(|e| ParseError { line, msg: e.msg })?;
                let loc = self.loc()?;
                let v = self.g.add_const_typed(data, ty, loc.into_iter().next());
                self.define(format!("@{name}"), v)?;
                continue;
            }
            let name = match self.next()? {
                Tok::Value(n) => n,
                t => return self.err(format!("expected a node or `}}`, found {t:?}")),
            };
            self.expect("=")?;
            let line = self.line();
            let opname = match self.next()? {
                Tok::Ident(s) => s,
                t => return self.err(format!("expected an op name, found {t:?}")),
            };
            let mut inputs = Vec::new();
            if matches!(self.peek(), Some(Tok::Value(_) | Tok::Global(_))) {
                loop {
                    inputs.push(self.operand()?);
                    if !self.eat(",") {
                        break;
                    }
                }
            }
            let mut attrs = AttrMap::default();
            if self.eat("{") {
                loop {
                    let key = match self.next()? {
                        Tok::Ident(k) => k,
                        t => return self.err(format!("expected an attribute name, found {t:?}")),
                    };
                    self.expect("=")?;
                    let v = self.attr_value()?;
                    attrs.0.insert(key, v);
                    if self.eat("}") {
                        break;
                    }
                    self.expect(",")?;
                }
            }
            let op = Op::from_parts(&opname, attrs).map_err(|msg| ParseError { line, msg })?;
            self.expect(":")?;
            let ty = self.ty()?;
            let loc = self.loc()?;
            let v = self.g.add_node(op, inputs, ty, loc);
            self.define(format!("%{name}"), v)?;
        }
        if self.pos < self.toks.len() {
            return self.err("text after the end of the graph");
        }
        let mut out_ids = Vec::new();
        for (key, ty, onnx, line) in outs {
            let v = *self.vals.get(&key).ok_or(ParseError { line, msg: format!("output {key} is never defined") })?;
            if *self.g.ty(v) != ty {
                return Err(ParseError { line, msg: format!("output {key} is declared {ty} but defined as {}", self.g.ty(v)) });
            }
            if onnx.is_some() {
                self.g.value_mut(v).name = onnx;
            }
            out_ids.push(v);
        }
        self.g.set_outputs(out_ids);
        Ok(std::mem::take(&mut self.g))
    }
}

fn is_float_text(s: &str) -> bool {
    s.contains(['.', 'e', 'E']) || s.contains("inf") || s.contains("NaN")
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Parses one graph in the text form.
pub fn parse_graph(src: &str) -> Result<Graph, ParseError> {
    let toks = lex(src)?;
    Parser { toks, pos: 0, g: Graph::default(), vals: HashMap::new() }.graph()
}
