//! The object graph the unpickler builds. Containers live in a flat arena and refer to each
//! other by index, which gives pickle's shared-reference semantics (the memo hands out the
//! same object, later mutations are visible through every reference) without `Rc` cycles and,
//! importantly for hostile input, without recursion: a million nested lists drop as one flat
//! `Vec`, and nothing walks the graph recursively.

use std::collections::HashMap;
use std::rc::Rc;

use super::state_dict::StoredDType;

/// Index of an object in the [`Arena`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ObjId(pub(crate) usize);

/// A pickle value. Scalars are held inline; strings are reference counted so that memo reads
/// (`BINGET`) of a large string cost nothing.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer outside i64 (`LONG1`/`LONG4`); its value is never needed.
    BigInt,
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Obj(ObjId),
}

impl Value {
    /// A short description for error messages (never recursive).
    pub(crate) fn kind(&self, arena: &Arena) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(_) => "bool".into(),
            Value::Int(_) | Value::BigInt => "int".into(),
            Value::Float(_) => "float".into(),
            Value::Str(_) => "str".into(),
            Value::Bytes(_) => "bytes".into(),
            Value::Obj(id) => match arena.get(*id) {
                Object::Tuple(_) => "tuple".into(),
                Object::List(_) => "list".into(),
                Object::Dict(_) => "dict".into(),
                Object::Set(_) => "set".into(),
                Object::Global(g) => format!("global `{}`", g.name()),
                Object::Storage(_) => "storage".into(),
                Object::Tensor(_) => "tensor".into(),
                Object::Opaque(class) => format!("instance of `{class}`"),
            },
        }
    }

    pub(crate) fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }
}

/// Key of the dict index: the hashable scalars a state dict or Lightning checkpoint uses as
/// keys. Other keys (tuples, objects) are compared by identity, which only matters for
/// duplicate keys in data this loader ignores.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum DictKey {
    None,
    Int(i64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Float(u64),
    Obj(usize),
    BigInt,
}

impl DictKey {
    fn of(v: &Value) -> DictKey {
        match v {
            Value::None => DictKey::None,
            // Python: True == 1 and hash(True) == hash(1).
            Value::Bool(b) => DictKey::Int(i64::from(*b)),
            Value::Int(i) => DictKey::Int(*i),
            Value::BigInt => DictKey::BigInt,
            Value::Float(f) => DictKey::Float(f.to_bits()),
            Value::Str(s) => DictKey::Str(s.clone()),
            Value::Bytes(b) => DictKey::Bytes(b.clone()),
            Value::Obj(id) => DictKey::Obj(id.0),
        }
    }
}

/// An insertion-ordered dict with Python's overwrite semantics (a repeated key keeps its first
/// position and takes the last value). Indexed, so hostile inputs with many keys stay linear.
#[derive(Debug, Clone, Default)]
pub(crate) struct Dict {
    entries: Vec<(Value, Value)>,
    index: HashMap<DictKey, usize>,
}

impl Dict {
    pub(crate) fn insert(&mut self, key: Value, value: Value) {
        let k = DictKey::of(&key);
        match self.index.get(&k) {
            Some(&i) => self.entries[i].1 = value,
            None => {
                self.index.insert(k, self.entries.len());
                self.entries.push((key, value));
            }
        }
    }

    pub(crate) fn get_str(&self, key: &str) -> Option<&Value> {
        let k = DictKey::Str(Rc::from(key));
        self.index.get(&k).map(|&i| &self.entries[i].1)
    }

    pub(crate) fn entries(&self) -> &[(Value, Value)] {
        &self.entries
    }
}

/// A global (`module.name`) as the unpickler understands it. Only the first group is ever
/// interpreted; everything else is a name attached to inert placeholder objects.
#[derive(Debug, Clone)]
pub(crate) enum Global {
    OrderedDict,
    /// `builtins.dict`, `collections.defaultdict`, `collections.Counter`: dict-like.
    DictLike(Rc<str>),
    Set,
    FrozenSet,
    ByteArray,
    CodecsEncode,
    TorchSize,
    RebuildTensor,
    RebuildTensorV2,
    RebuildTensorV3,
    RebuildParameter,
    RebuildParameterWithState,
    RebuildFromTypeV2,
    /// `torch.FloatStorage`, ... as the type field of a storage persistent id.
    StorageType(StorageKind),
    /// `torch.float32`, ...: the dtype argument of `_rebuild_tensor_v3`.
    TorchDType(Result<StoredDType, Rc<str>>),
    /// Any other global that cannot run code by being named: building it yields an inert
    /// [`Object::Opaque`] that is an error only where a tensor is needed.
    Other(Rc<str>),
}

impl Global {
    pub(crate) fn name(&self) -> &str {
        match self {
            Global::OrderedDict => "collections.OrderedDict",
            Global::DictLike(n) | Global::Other(n) => n,
            Global::Set => "builtins.set",
            Global::FrozenSet => "builtins.frozenset",
            Global::ByteArray => "builtins.bytearray",
            Global::CodecsEncode => "_codecs.encode",
            Global::TorchSize => "torch.Size",
            Global::RebuildTensor => "torch._utils._rebuild_tensor",
            Global::RebuildTensorV2 => "torch._utils._rebuild_tensor_v2",
            Global::RebuildTensorV3 => "torch._utils._rebuild_tensor_v3",
            Global::RebuildParameter => "torch._utils._rebuild_parameter",
            Global::RebuildParameterWithState => "torch._utils._rebuild_parameter_with_state",
            Global::RebuildFromTypeV2 => "torch._tensor._rebuild_from_type_v2",
            Global::StorageType(k) => &k.name,
            Global::TorchDType(Ok(_)) => "torch.<dtype>",
            Global::TorchDType(Err(n)) => n,
        }
    }
}

/// Element type of a storage persistent id; `dtype` is `Err(name)` for storages the engine
/// cannot use (complex, quantized), which is an error only if a needed tensor views one.
#[derive(Debug, Clone)]
pub(crate) struct StorageKind {
    pub(crate) name: Rc<str>,
    pub(crate) dtype: Result<StoredDType, Rc<str>>,
}

/// A storage persistent id: `('storage', type, key, location, numel)` (the legacy stream adds
/// a sixth item, `view_metadata`). The bytes are the archive record `data/<key>` (zip) or the
/// stream's record for `key` (legacy); several tensors may view the same key.
#[derive(Debug, Clone)]
pub(crate) struct StorageRef {
    pub(crate) key: Rc<str>,
    pub(crate) kind: StorageKind,
    /// Declared element count (`None` if not a non-negative int); the legacy reader checks it
    /// against the count in front of the storage's bytes.
    pub(crate) numel: Option<usize>,
}

/// A tensor view of a storage, not yet read: only state-dict tensors are ever materialised,
/// so optimizer moments in a Lightning checkpoint cost nothing.
#[derive(Debug, Clone)]
pub(crate) struct TensorRef {
    pub(crate) storage_key: Rc<str>,
    /// Element type of the view (`_rebuild_tensor_v3` views an untyped storage with a dtype).
    pub(crate) dtype: Result<StoredDType, Rc<str>>,
    /// In elements of `dtype`.
    pub(crate) offset: usize,
    pub(crate) shape: Vec<usize>,
    /// In elements of `dtype`.
    pub(crate) stride: Vec<usize>,
}

#[derive(Debug, Clone)]
pub(crate) enum Object {
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Dict),
    Set(Vec<Value>),
    Global(Global),
    Storage(StorageRef),
    Tensor(TensorRef),
    /// An object of a class this loader does not interpret (hyper-parameter containers, paths,
    /// user classes). Its contents are dropped; it is an error only inside the state dict.
    Opaque(Rc<str>),
}

/// Owner of every container built while unpickling.
#[derive(Debug, Default)]
pub(crate) struct Arena {
    objects: Vec<Object>,
}

impl Arena {
    pub(crate) fn alloc(&mut self, obj: Object) -> Value {
        self.objects.push(obj);
        Value::Obj(ObjId(self.objects.len() - 1))
    }

    pub(crate) fn get(&self, id: ObjId) -> &Object {
        // Ids are only created by `alloc`, so they are always in range.
        &self.objects[id.0]
    }

    pub(crate) fn get_mut(&mut self, id: ObjId) -> &mut Object {
        &mut self.objects[id.0]
    }

    /// Every object, in creation order.
    pub(crate) fn objects(&self) -> &[Object] {
        &self.objects
    }

    /// The object behind a value, if it is one.
    pub(crate) fn object<'a>(&'a self, v: &Value) -> Option<&'a Object> {
        match v {
            Value::Obj(id) => Some(self.get(*id)),
            _ => None,
        }
    }
}
