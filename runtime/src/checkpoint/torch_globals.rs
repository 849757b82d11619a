//! What the unpickler does with the globals a `torch.save` file names. Nothing is ever
//! imported or called: a global is classified by its dotted name, and "calling" it (`REDUCE`,
//! `NEWOBJ`) builds a plain data object in Rust.
//!
//! Three tiers (see the module docs of `checkpoint` for the reasoning):
//! 1. interpreted: `collections.OrderedDict`, sets, `_codecs.encode` (protocol-2 bytes),
//!    `torch.Size`, the storage types and dtypes, the tensor rebuild functions;
//! 2. forbidden: names whose only purpose in a pickle is to run code (`os.system`,
//!    `builtins.eval`, `subprocess.*`, ...): the whole file is refused at once;
//! 3. everything else: an inert placeholder that is an error only where the state dict needs
//!    a tensor (so Lightning hyper-parameters holding arbitrary classes are skipped).

use std::rc::Rc;

use super::pickle_value::{Arena, Dict, Global, Object, StorageKind, StorageRef, TensorRef, Value};
use super::state_dict::StoredDType;

/// Modules whose globals can only mean "run code" in a pickle. Matched on the module path and
/// its sub-modules. (`torch._C` and `torch.ops` are not here: hyper-parameters legitimately
/// name tensor functions such as `torch._C._nn.gelu`, and they stay inert placeholders.)
#[rustfmt::skip]
const FORBIDDEN_MODULES: &[&str] = &[
    "os", "posix", "nt", "posixpath", "ntpath", "subprocess", "sys", "runpy", "importlib",
    "pickle", "_pickle", "cPickle", "dill", "shutil", "socket", "pty", "webbrowser", "code",
    "codeop", "ctypes", "multiprocessing", "marshal", "types", "operator", "_operator", "io",
    "_io", "pdb", "timeit", "commands", "platform", "asyncio", "threading", "_thread",
    "signal", "tempfile", "urllib", "http", "ftplib", "smtplib", "requests", "torch.hub",
    "torch.jit", "torch.package", "torch.utils.cpp_extension", "numpy.testing", "numpy.f2py",
    "numpy.distutils",
];

/// Harmless names inside the modules above.
const ALLOWED_IN_FORBIDDEN_MODULES: &[&str] = &["types.SimpleNamespace"];

/// Forbidden single names outside the modules above.
const FORBIDDEN_NAMES: &[&str] = &["torch.load", "torch.save", "torch.compile"];

/// `builtins` members that are plain data types or inert helpers; every other builtin
/// (`eval`, `exec`, `__import__`, `open`, `compile`, `input`, `breakpoint`, ...) is forbidden.
/// `getattr` is allowed because protocol-2 pickles use it for nested class names
/// (`getattr(Outer, "Inner")`); applied to an inert placeholder it yields another one.
#[rustfmt::skip]
const INERT_BUILTINS: &[&str] = &[
    "set", "frozenset", "bytearray", "dict", "list", "tuple", "int", "float", "complex", "str",
    "bool", "bytes", "slice", "range", "object", "getattr",
];

/// Python-2 module names that protocol-2 pickles (torch.save's default) use for builtins.
fn python3_module(module: &str) -> &str {
    match module {
        "__builtin__" | "exceptions" => "builtins",
        "copy_reg" => "copyreg",
        other => other,
    }
}

/// Classifies `module.name`. `Err(full name)` when the global is forbidden.
pub(crate) fn resolve(module: &str, name: &str) -> Result<Global, String> {
    let module = python3_module(module);
    let full = format!("{module}.{name}");
    let in_module =
        |m: &str| module == m || module.strip_prefix(m).is_some_and(|r| r.starts_with('.'));
    let forbidden_module = FORBIDDEN_MODULES.iter().any(|m| in_module(m))
        && !ALLOWED_IN_FORBIDDEN_MODULES.contains(&full.as_str());
    if forbidden_module || FORBIDDEN_NAMES.contains(&full.as_str()) {
        return Err(full);
    }
    if module == "builtins" && !INERT_BUILTINS.contains(&name) {
        return Err(full);
    }
    Ok(match (module, name) {
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("builtins", "dict") | ("collections", "defaultdict") | ("collections", "Counter") => {
            Global::DictLike(full.into())
        }
        ("builtins", "set") => Global::Set,
        ("builtins", "frozenset") => Global::FrozenSet,
        ("builtins", "bytearray") => Global::ByteArray,
        ("_codecs", "encode") => Global::CodecsEncode,
        ("torch", "Size") => Global::TorchSize,
        ("torch._utils", "_rebuild_tensor") => Global::RebuildTensor,
        ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
        ("torch._utils", "_rebuild_tensor_v3") => Global::RebuildTensorV3,
        ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
        ("torch._utils", "_rebuild_parameter_with_state") => Global::RebuildParameterWithState,
        ("torch._tensor", "_rebuild_from_type_v2") => Global::RebuildFromTypeV2,
        ("torch" | "torch.cuda", n) if n.ends_with("Storage") => {
            Global::StorageType(storage_kind(full.into(), n))
        }
        ("torch", n) => match torch_dtype(n) {
            Some(dtype) => Global::TorchDType(dtype.map_err(|()| Rc::from(full.as_str()))),
            None => Global::Other(full.into()),
        },
        _ => Global::Other(full.into()),
    })
}

fn storage_kind(name: Rc<str>, short: &str) -> StorageKind {
    let dtype = match short {
        "FloatStorage" => Ok(StoredDType::F32),
        "DoubleStorage" => Ok(StoredDType::F64),
        "HalfStorage" => Ok(StoredDType::F16),
        "BFloat16Storage" => Ok(StoredDType::BF16),
        "LongStorage" => Ok(StoredDType::I64),
        "IntStorage" => Ok(StoredDType::I32),
        "ShortStorage" => Ok(StoredDType::I16),
        "CharStorage" => Ok(StoredDType::I8),
        "ByteStorage" | "UntypedStorage" => Ok(StoredDType::U8),
        "BoolStorage" => Ok(StoredDType::Bool),
        _ => Err(name.clone()),
    };
    StorageKind { name, dtype }
}

/// `Some(Ok)` for a dtype the engine reads, `Some(Err)` for a dtype it does not (complex,
/// float8, unsigned wider than 8 bits, quantized), `None` if `name` is not a dtype at all.
fn torch_dtype(name: &str) -> Option<Result<StoredDType, ()>> {
    Some(Ok(match name {
        "float32" | "float" => StoredDType::F32,
        "float64" | "double" => StoredDType::F64,
        "float16" | "half" => StoredDType::F16,
        "bfloat16" => StoredDType::BF16,
        "int64" | "long" => StoredDType::I64,
        "int32" | "int" => StoredDType::I32,
        "int16" | "short" => StoredDType::I16,
        "int8" => StoredDType::I8,
        "uint8" => StoredDType::U8,
        "bool" => StoredDType::Bool,
        n if n.starts_with("float")
            || n.starts_with("complex")
            || n.starts_with("uint")
            || n.starts_with("int")
            || n.starts_with("qint")
            || n.starts_with("quint")
            || n.starts_with("bits")
            || matches!(n, "cfloat" | "cdouble" | "chalf") =>
        {
            return Some(Err(()))
        }
        _ => return None,
    }))
}

fn tuple_items<'a>(arena: &'a Arena, v: &Value, what: &str) -> Result<&'a [Value], String> {
    match arena.object(v) {
        Some(Object::Tuple(items)) | Some(Object::List(items)) => Ok(items),
        _ => Err(format!("{what}: expected a tuple, found {}", v.kind(arena))),
    }
}

fn non_negative(v: &Value, what: &str, arena: &Arena) -> Result<usize, String> {
    v.as_int()
        .and_then(|i| usize::try_from(i).ok())
        .ok_or_else(|| {
            format!(
                "{what}: expected a non-negative int, found {}",
                v.kind(arena)
            )
        })
}

fn usize_list(arena: &Arena, v: &Value, what: &str) -> Result<Vec<usize>, String> {
    tuple_items(arena, v, what)?
        .iter()
        .map(|x| non_negative(x, what, arena))
        .collect()
}

/// `_rebuild_tensor(_v2|_v3)(storage, offset, size, stride, ...)`.
fn rebuild_tensor(
    arena: &mut Arena,
    args: &[Value],
    dtype_arg: Option<&Value>,
) -> Result<Value, String> {
    let [storage, offset, size, stride, ..] = args else {
        return Err(format!(
            "tensor rebuild: expected at least 4 arguments, found {}",
            args.len()
        ));
    };
    let Some(Object::Storage(storage)) = arena.object(storage) else {
        return Err(format!(
            "tensor rebuild: expected a storage, found {}",
            storage.kind(arena)
        ));
    };
    let storage_key = storage.key.clone();
    let mut dtype = storage.kind.dtype.clone();
    if let Some(d) = dtype_arg {
        match arena.object(d) {
            Some(Object::Global(Global::TorchDType(t))) => dtype = t.clone(),
            _ => {
                return Err(format!(
                    "_rebuild_tensor_v3: expected a dtype, found {}",
                    d.kind(arena)
                ))
            }
        }
    }
    let offset = non_negative(offset, "storage offset", arena)?;
    let shape = usize_list(arena, size, "tensor size")?;
    let stride = usize_list(arena, stride, "tensor stride")?;
    if shape.len() != stride.len() {
        return Err(format!(
            "tensor size {shape:?} and stride {stride:?} differ in rank"
        ));
    }
    Ok(arena.alloc(Object::Tensor(TensorRef {
        storage_key,
        dtype,
        offset,
        shape,
        stride,
    })))
}

fn expect_tensor(arena: &Arena, v: Option<&Value>, what: &str) -> Result<Value, String> {
    match v {
        Some(v @ Value::Obj(id)) if matches!(arena.get(*id), Object::Tensor(_)) => Ok(v.clone()),
        Some(v) => Err(format!(
            "{what}: expected a tensor, found {}",
            v.kind(arena)
        )),
        None => Err(format!("{what}: missing tensor argument")),
    }
}

fn pairs_into_dict(arena: &Arena, args: &[Value]) -> Dict {
    let mut dict = Dict::default();
    if let Some(Object::List(items) | Object::Tuple(items)) =
        args.first().and_then(|a| arena.object(a))
    {
        for item in items {
            if let Some(Object::Tuple(kv) | Object::List(kv)) = arena.object(item) {
                if let [k, v] = kv.as_slice() {
                    dict.insert(k.clone(), v.clone());
                }
            }
        }
    }
    dict
}

/// `_codecs.encode(text, encoding)`: how protocol 2 writes `bytes`.
fn codecs_encode(arena: &Arena, args: &[Value]) -> Result<Value, String> {
    let (Some(Value::Str(text)), encoding) = (args.first(), args.get(1)) else {
        return Err("_codecs.encode: expected a str argument".into());
    };
    let encoding = match encoding {
        Some(Value::Str(e)) => e.to_ascii_lowercase(),
        None => "utf-8".into(),
        Some(other) => {
            return Err(format!(
                "_codecs.encode: bad encoding {}",
                other.kind(arena)
            ))
        }
    };
    let bytes: Vec<u8> = match encoding.as_str() {
        "latin1" | "latin-1" | "iso-8859-1" => text
            .chars()
            .map(|c| {
                u8::try_from(u32::from(c))
                    .map_err(|_| "_codecs.encode: non-latin-1 char".to_string())
            })
            .collect::<Result<_, _>>()?,
        "utf-8" | "utf8" => text.as_bytes().to_vec(),
        other => return Err(format!("_codecs.encode: unsupported encoding `{other}`")),
    };
    Ok(Value::Bytes(bytes.into()))
}

/// `REDUCE`: "call" `callable(*args)` by building the equivalent data object.
pub(crate) fn reduce(arena: &mut Arena, callable: &Value, args: &Value) -> Result<Value, String> {
    let global = match arena.object(callable) {
        Some(Object::Global(g)) => g.clone(),
        // Calling an instance (e.g. a class built by `copyreg._reconstructor`): inert.
        Some(Object::Opaque(class)) => return Ok(arena.alloc(Object::Opaque(class.clone()))),
        _ => return Err(format!("REDUCE on a non-callable {}", callable.kind(arena))),
    };
    let args = tuple_items(arena, args, "REDUCE arguments")?.to_vec();
    match global {
        Global::OrderedDict | Global::DictLike(_) => {
            let dict = pairs_into_dict(arena, &args);
            Ok(arena.alloc(Object::Dict(dict)))
        }
        Global::Set | Global::FrozenSet => {
            let items = match args.first() {
                Some(a) => tuple_items(arena, a, "set items")?.to_vec(),
                None => Vec::new(),
            };
            Ok(arena.alloc(Object::Set(items)))
        }
        Global::ByteArray => match args.first() {
            None => Ok(Value::Bytes(Rc::from(&[][..]))),
            Some(Value::Bytes(b)) => Ok(Value::Bytes(b.clone())),
            Some(_) => codecs_encode(arena, &args),
        },
        Global::CodecsEncode => codecs_encode(arena, &args),
        Global::TorchSize => match args.first() {
            Some(a) => Ok(a.clone()),
            None => Ok(arena.alloc(Object::Tuple(Vec::new()))),
        },
        Global::RebuildTensor | Global::RebuildTensorV2 => rebuild_tensor(arena, &args, None),
        Global::RebuildTensorV3 => {
            let dtype = args
                .get(6)
                .cloned()
                .ok_or("_rebuild_tensor_v3: missing dtype")?;
            rebuild_tensor(arena, &args, Some(&dtype))
        }
        Global::RebuildParameter | Global::RebuildParameterWithState => {
            expect_tensor(arena, args.first(), "_rebuild_parameter")
        }
        Global::RebuildFromTypeV2 => {
            // (func, new_type, args, state): the subclass and its state carry no weights.
            let (Some(func), Some(inner)) = (args.first(), args.get(2)) else {
                return Err("_rebuild_from_type_v2: expected (func, type, args, state)".into());
            };
            if let Some(Object::Global(Global::RebuildFromTypeV2)) = arena.object(func) {
                return Err("_rebuild_from_type_v2 nested in itself".into());
            }
            reduce(arena, &func.clone(), &inner.clone())
        }
        Global::StorageType(_) | Global::TorchDType(_) | Global::Other(_) => {
            let name: Rc<str> = global.name().into();
            Ok(arena.alloc(Object::Opaque(name)))
        }
    }
}

/// `NEWOBJ` / `NEWOBJ_EX`: `cls.__new__(cls, *args)`.
pub(crate) fn new_object(arena: &mut Arena, class: &Value) -> Result<Value, String> {
    let obj = match arena.object(class) {
        Some(Object::Global(Global::OrderedDict | Global::DictLike(_))) => {
            Object::Dict(Dict::default())
        }
        Some(Object::Global(Global::Set | Global::FrozenSet)) => Object::Set(Vec::new()),
        Some(Object::Global(g)) => Object::Opaque(g.name().into()),
        Some(Object::Opaque(class)) => Object::Opaque(class.clone()),
        _ => return Err(format!("NEWOBJ on a non-class {}", class.kind(arena))),
    };
    Ok(arena.alloc(obj))
}

/// `BINPERSID`: torch's persistent id for a storage, `('storage', type, key, location, numel)`
/// in a zip archive; the legacy stream (`legacy`) adds `view_metadata` and may also hold
/// `('module', class, source_file, source)` ids of pickled `nn.Module` classes.
pub(crate) fn persistent_load(
    arena: &mut Arena,
    pid: &Value,
    legacy: bool,
) -> Result<Value, String> {
    let items = tuple_items(arena, pid, "persistent id")?;
    let (tag, rest) = match items {
        [Value::Str(tag), rest @ ..] => (tag, rest),
        _ => return Err("persistent id: expected a tuple starting with a str tag".into()),
    };
    let (storage_type, key, numel) = match (&**tag, rest, legacy) {
        ("storage", [storage_type, key, _location, numel], false) => (storage_type, key, numel),
        ("storage", [storage_type, key, _location, numel, view], true) => {
            if !matches!(view, Value::None) {
                // Storage views were last written by PyTorch 0.3 (torch >= 0.4 always writes
                // None); no checkpoint this engine reads has them.
                return Err(
                    "persistent id: legacy storage views (view_metadata not None, \
                     PyTorch < 0.4) are not supported; re-save the file with a current PyTorch"
                        .into(),
                );
            }
            (storage_type, key, numel)
        }
        // The class of a module pickled whole: only ever a placeholder here (never a tensor).
        ("module", [class, ..], true) => return Ok(class.clone()),
        ("storage", _, _) => {
            return Err(format!(
                "persistent id: expected a {}-tuple, found {} items",
                if legacy { 6 } else { 5 },
                items.len()
            ))
        }
        (other, _, _) => return Err(format!("persistent id: unknown kind `{other}`")),
    };
    let kind = match arena.object(storage_type) {
        Some(Object::Global(Global::StorageType(kind))) => kind.clone(),
        _ => {
            return Err(format!(
                "persistent id: expected a storage type, found {}",
                storage_type.kind(arena)
            ))
        }
    };
    let key: Rc<str> = match key {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string().into(),
        other => {
            return Err(format!(
                "persistent id: bad storage key {}",
                other.kind(arena)
            ))
        }
    };
    let numel = numel.as_int().and_then(|n| usize::try_from(n).ok());
    Ok(arena.alloc(Object::Storage(StorageRef { key, kind, numel })))
}
