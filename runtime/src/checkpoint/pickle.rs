//! A pickle reader that executes nothing: it interprets the binary opcodes of protocols 2-5
//! (what `torch.save` writes) into the data graph of [`super::pickle_value`], classifying
//! globals by name through [`super::torch_globals`].
//!
//! The text opcodes of protocols 0/1 (`INT`, `STRING`, `PUT`, `INST`, ...), the copyreg
//! extension registry (`EXT*`) and out-of-band buffers are refused with a clear message:
//! `torch.save` never writes them.
//!
//! Hostile input: every length is checked against the bytes left before anything is
//! allocated, the memo is a map (a `LONG_BINPUT` of 4e9 costs one entry), stack frames follow
//! CPython's mark semantics (no reaching below a `MARK`), and nothing recurses.

use std::collections::HashMap;
use std::rc::Rc;

use super::pickle_value::{Arena, Object, Value};
use super::torch_globals;

/// Why unpickling stopped.
#[derive(Debug)]
pub(crate) enum PickleError {
    /// Malformed or unsupported input at byte `offset`.
    Malformed { offset: usize, detail: String },
    /// A global that can only mean "run code" (see [`torch_globals`]).
    Forbidden { global: String },
}

/// The unpickled root value and the arena that owns its objects.
pub(crate) struct Unpickled {
    pub(crate) root: Value,
    pub(crate) arena: Arena,
    /// Globals that were neither interpreted nor forbidden (kept as inert placeholders), in
    /// first-seen order; the caller reports them.
    pub(crate) opaque_globals: Vec<String>,
}

/// Which persistent ids (`BINPERSID`) the pickle may hold: the zip format's 5-tuple storage
/// ids, or the legacy stream's 6-tuple ones (plus its `'module'` ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PersistentIds {
    Zip,
    Legacy,
}

struct Machine<'a> {
    input: &'a [u8],
    pids: PersistentIds,
    pos: usize,
    /// Position of the opcode being executed, for error messages.
    op_pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
    arena: Arena,
    opaque_globals: Vec<String>,
}

type Step<T> = Result<T, PickleError>;

/// Unpickles `input` (a zip archive's `data.pkl`) without executing anything.
pub(crate) fn unpickle(input: &[u8]) -> Result<Unpickled, PickleError> {
    unpickle_prefix(input, PersistentIds::Zip).map(|(u, _)| u)
}

/// Unpickles the pickle at the start of `input`, which may be followed by other data (the
/// legacy `torch.save` stream is several pickles and raw storages back to back), and returns
/// how many bytes it took: everything up to and including its `STOP`.
pub(crate) fn unpickle_prefix(
    input: &[u8],
    pids: PersistentIds,
) -> Result<(Unpickled, usize), PickleError> {
    let mut m = Machine {
        input,
        pids,
        pos: 0,
        op_pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        arena: Arena::default(),
        opaque_globals: Vec::new(),
    };
    let root = m.run()?;
    let consumed = m.pos;
    Ok((
        Unpickled {
            root,
            arena: m.arena,
            opaque_globals: m.opaque_globals,
        },
        consumed,
    ))
}

impl<'a> Machine<'a> {
    fn fail<T>(&self, detail: impl Into<String>) -> Step<T> {
        Err(PickleError::Malformed {
            offset: self.op_pos,
            detail: detail.into(),
        })
    }

    fn take(&mut self, n: usize) -> Step<&'a [u8]> {
        let input: &'a [u8] = self.input;
        match self.pos.checked_add(n).filter(|&end| end <= input.len()) {
            Some(end) => {
                let bytes = &input[self.pos..end];
                self.pos = end;
                Ok(bytes)
            }
            None => self.fail(format!(
                "truncated: needs {n} bytes, {} left",
                input.len() - self.pos
            )),
        }
    }

    fn take_array<const N: usize>(&mut self) -> Step<[u8; N]> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u8(&mut self) -> Step<u8> {
        Ok(self.take_array::<1>()?[0])
    }

    fn u16(&mut self) -> Step<u16> {
        Ok(u16::from_le_bytes(self.take_array()?))
    }

    fn u32(&mut self) -> Step<u32> {
        Ok(u32::from_le_bytes(self.take_array()?))
    }

    fn u64_len(&mut self) -> Step<usize> {
        let n = u64::from_le_bytes(self.take_array()?);
        match usize::try_from(n) {
            Ok(n) => Ok(n),
            Err(_) => self.fail(format!("length {n} too large")),
        }
    }

    /// A `\n`-terminated line (the `GLOBAL` opcode's text arguments).
    fn line(&mut self) -> Step<String> {
        let rest = &self.input[self.pos..];
        match rest.iter().position(|&b| b == b'\n') {
            Some(n) => {
                let text = String::from_utf8_lossy(&rest[..n]).into_owned();
                self.pos += n + 1;
                Ok(text)
            }
            None => self.fail("truncated: unterminated GLOBAL line"),
        }
    }

    fn text(&mut self, n: usize) -> Step<Value> {
        // CPython decodes with `surrogatepass`; lone surrogates never occur in real keys, so a
        // lossy decode is enough and cannot fail.
        let bytes = self.take(n)?;
        Ok(Value::Str(Rc::from(
            String::from_utf8_lossy(bytes).as_ref(),
        )))
    }

    fn bytes(&mut self, n: usize) -> Step<Value> {
        Ok(Value::Bytes(Rc::from(self.take(n)?)))
    }

    /// Index of the first stack slot of the current mark frame.
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Step<Value> {
        if self.stack.len() <= self.floor() {
            return self.fail("stack underflow");
        }
        match self.stack.pop() {
            Some(v) => Ok(v),
            None => self.fail("stack underflow"),
        }
    }

    fn top(&self) -> Step<&Value> {
        if self.stack.len() <= self.floor() {
            return self.fail("stack underflow");
        }
        match self.stack.last() {
            Some(v) => Ok(v),
            None => self.fail("stack underflow"),
        }
    }

    fn pop_mark(&mut self) -> Step<Vec<Value>> {
        match self.marks.pop() {
            Some(mark) if mark <= self.stack.len() => Ok(self.stack.split_off(mark)),
            _ => self.fail("no MARK on the stack"),
        }
    }

    fn push_obj(&mut self, obj: Object) {
        let v = self.arena.alloc(obj);
        self.stack.push(v);
    }

    fn memo_put(&mut self, key: u64) -> Step<()> {
        let v = self.top()?.clone();
        self.memo.insert(key, v);
        Ok(())
    }

    fn memo_get(&mut self, key: u64) -> Step<()> {
        match self.memo.get(&key) {
            Some(v) => {
                let v = v.clone();
                self.stack.push(v);
                Ok(())
            }
            None => self.fail(format!("memo key {key} was never stored")),
        }
    }

    fn global(&mut self, module: &str, name: &str) -> Step<()> {
        match torch_globals::resolve(module, name) {
            Ok(g) => {
                if let super::pickle_value::Global::Other(n) = &g {
                    if !self.opaque_globals.iter().any(|s| **s == **n) {
                        self.opaque_globals.push(n.to_string());
                    }
                }
                self.push_obj(Object::Global(g));
                Ok(())
            }
            Err(global) => Err(PickleError::Forbidden { global }),
        }
    }

    /// Signed little-endian two's-complement integer of `n` bytes (`LONG1`/`LONG4`).
    fn long(&mut self, n: usize) -> Step<Value> {
        let bytes = self.take(n)?;
        if n == 0 {
            return Ok(Value::Int(0));
        }
        let negative = bytes[n - 1] & 0x80 != 0;
        let fill = if negative { 0xff } else { 0x00 };
        if n > 8 && bytes[8..].iter().any(|&b| b != fill) {
            return Ok(Value::BigInt);
        }
        let mut buf = [fill; 8];
        let used = n.min(8);
        buf[..used].copy_from_slice(&bytes[..used]);
        let v = i64::from_le_bytes(buf);
        // With n > 8 the sign must also agree with bit 63, else the value needs more bits.
        if n > 8 && (v < 0) != negative {
            return Ok(Value::BigInt);
        }
        Ok(Value::Int(v))
    }

    fn append_to_top(&mut self, items: Vec<Value>) -> Step<()> {
        let target = self.top()?.clone();
        match target {
            Value::Obj(id) => match self.arena.get_mut(id) {
                Object::List(list) => {
                    list.extend(items);
                    Ok(())
                }
                Object::Set(set) => {
                    set.extend(items);
                    Ok(())
                }
                // A list subclass of a class we do not interpret: its items are dropped.
                Object::Opaque(_) => Ok(()),
                _ => self.fail("APPEND to a non-list"),
            },
            _ => self.fail("APPEND to a non-list"),
        }
    }

    fn set_items_on_top(&mut self, items: Vec<Value>) -> Step<()> {
        if items.len() & 1 == 1 {
            return self.fail("SETITEMS with an odd number of items");
        }
        let target = self.top()?.clone();
        match target {
            Value::Obj(id) => match self.arena.get_mut(id) {
                Object::Dict(dict) => {
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        dict.insert(k, v);
                    }
                    Ok(())
                }
                Object::Opaque(_) => Ok(()),
                _ => self.fail("SETITEM on a non-dict"),
            },
            _ => self.fail("SETITEM on a non-dict"),
        }
    }

    fn run(&mut self) -> Step<Value> {
        loop {
            self.op_pos = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return self.fail(format!("unsupported pickle protocol {proto}"));
                    }
                }
                0x95 => {
                    self.u64_len()?; // FRAME: a read-ahead hint only
                }
                b'.' => return self.pop(), // STOP
                b'(' => self.marks.push(self.stack.len()),
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = i32::from_le_bytes(self.take_array()?);
                    self.stack.push(Value::Int(v.into()));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v.into()));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(v.into()));
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let v = self.long(n)?;
                    self.stack.push(v);
                }
                0x8b => {
                    let n = i32::from_le_bytes(self.take_array()?);
                    let Ok(n) = usize::try_from(n) else {
                        return self.fail("LONG4 with a negative length");
                    };
                    let v = self.long(n)?;
                    self.stack.push(v);
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take_array()?);
                    self.stack.push(Value::Float(v));
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                0x8d => {
                    let n = self.u64_len()?;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                // BINSTRING / SHORT_BINSTRING: Python 2 `str`, read as text like torch.load.
                b'T' => {
                    let n = self.u32()? as usize;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                b'U' => {
                    let n = self.u8()? as usize;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    let v = self.bytes(n)?;
                    self.stack.push(v);
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    let v = self.bytes(n)?;
                    self.stack.push(v);
                }
                0x8e | 0x96 => {
                    let n = self.u64_len()?;
                    let v = self.bytes(n)?;
                    self.stack.push(v);
                }
                b'}' => self.push_obj(Object::Dict(Default::default())),
                b']' => self.push_obj(Object::List(Vec::new())),
                b')' => self.push_obj(Object::Tuple(Vec::new())),
                0x8f => self.push_obj(Object::Set(Vec::new())),
                b'd' => {
                    let items = self.pop_mark()?;
                    if items.len() & 1 == 1 {
                        return self.fail("DICT with an odd number of items");
                    }
                    let mut dict = super::pickle_value::Dict::default();
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        dict.insert(k, v);
                    }
                    self.push_obj(Object::Dict(dict));
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push_obj(Object::List(items));
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push_obj(Object::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push_obj(Object::Tuple(items));
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    self.push_obj(Object::Set(items));
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append_to_top(vec![v])?;
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    self.append_to_top(items)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items_on_top(vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items_on_top(items)?;
                }
                b'0' => {
                    // POP: like CPython, an empty frame pops its mark instead.
                    if self.stack.len() > self.floor() {
                        self.pop()?;
                    } else {
                        self.pop_mark()?;
                    }
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v);
                }
                b'q' => {
                    let k = self.u8()?;
                    self.memo_put(k.into())?;
                }
                b'r' => {
                    let k = self.u32()?;
                    self.memo_put(k.into())?;
                }
                0x94 => self.memo_put(self.memo.len() as u64)?,
                b'h' => {
                    let k = self.u8()?;
                    self.memo_get(k.into())?;
                }
                b'j' => {
                    let k = self.u32()?;
                    self.memo_get(k.into())?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.global(&module, &name)?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(module), Value::Str(name)) = (module, name) else {
                        return self.fail("STACK_GLOBAL with non-string names");
                    };
                    self.global(&module, &name)?;
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = torch_globals::reduce(&mut self.arena, &callable, &args);
                    self.push_result(v)?;
                }
                0x81 => {
                    let _args = self.pop()?;
                    let class = self.pop()?;
                    let v = torch_globals::new_object(&mut self.arena, &class);
                    self.push_result(v)?;
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let _args = self.pop()?;
                    let class = self.pop()?;
                    let v = torch_globals::new_object(&mut self.arena, &class);
                    self.push_result(v)?;
                }
                b'b' => {
                    // BUILD sets an object's state (`__setstate__` / `__dict__`): attributes
                    // such as an OrderedDict's `_metadata` or a placeholder's fields. None of
                    // them carry weights, so the state is dropped.
                    self.pop()?;
                    self.top()?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let legacy = self.pids == PersistentIds::Legacy;
                    let v = torch_globals::persistent_load(&mut self.arena, &pid, legacy);
                    self.push_result(v)?;
                }
                other => return self.fail(unsupported_opcode(other)),
            }
        }
    }

    fn push_result(&mut self, v: Result<Value, String>) -> Step<()> {
        match v {
            Ok(v) => {
                self.stack.push(v);
                Ok(())
            }
            Err(detail) => self.fail(detail),
        }
    }
}

fn unsupported_opcode(op: u8) -> String {
    let name = match op {
        b'I' => "INT (protocol 0 text)",
        b'L' => "LONG (protocol 0 text)",
        b'F' => "FLOAT (protocol 0 text)",
        b'S' => "STRING (protocol 0 text)",
        b'V' => "UNICODE (protocol 0 text)",
        b'p' => "PUT (protocol 0 text)",
        b'g' => "GET (protocol 0 text)",
        b'P' => "PERSID (protocol 0 text)",
        b'i' => "INST (protocol 0)",
        b'o' => "OBJ (protocol 1)",
        0x82..=0x84 => "EXT1/EXT2/EXT4 (copyreg extension registry)",
        0x97 | 0x98 => "NEXT_BUFFER/READONLY_BUFFER (out-of-band buffers)",
        _ => return format!("unknown opcode 0x{op:02x}"),
    };
    format!("opcode {name} is not supported (torch.save never writes it)")
}
