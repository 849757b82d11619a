//! A minimal pickle writer, to build hand-made and generated `data.pkl` streams opcode by
//! opcode (independent of Python, so cases Python would not write can be made too).

#[derive(Default)]
pub struct Pickle(pub Vec<u8>);

impl Pickle {
    /// Starts a protocol-2 stream, as torch.save writes.
    pub fn proto2() -> Self {
        let mut p = Pickle::default();
        p.op(0x80).op(2);
        p
    }
    pub fn op(&mut self, op: u8) -> &mut Self {
        self.0.push(op);
        self
    }
    /// BINUNICODE.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.0.push(b'X');
        self.0.extend((s.len() as u32).to_le_bytes());
        self.0.extend(s.as_bytes());
        self
    }
    /// BININT (i32).
    pub fn int(&mut self, v: usize) -> &mut Self {
        self.0.push(b'J');
        self.0.extend((v as i32).to_le_bytes());
        self
    }
    /// GLOBAL (text form, protocols 0-3).
    pub fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.0.push(b'c');
        self.0.extend(format!("{module}\n{name}\n").as_bytes());
        self
    }
    /// A tuple of ints.
    pub fn ints(&mut self, v: &[usize]) -> &mut Self {
        self.op(b'(');
        for &x in v {
            self.int(x);
        }
        self.op(b't')
    }
    /// `_rebuild_tensor_v2(storage(class, key, numel), offset, shape, stride, False, OrderedDict())`
    /// as torch.save writes it.
    pub fn tensor_v2(
        &mut self,
        storage_class: &str,
        key: &str,
        numel: usize,
        offset: usize,
        shape: &[usize],
        stride: &[usize],
    ) -> &mut Self {
        self.global("torch._utils", "_rebuild_tensor_v2").op(b'(');
        self.storage(storage_class, key, numel);
        self.int(offset).ints(shape).ints(stride).op(0x89);
        self.global("collections", "OrderedDict").op(b')').op(b'R');
        self.op(b't').op(b'R')
    }
    /// A storage persistent id, `('storage', torch.<class>, key, 'cpu', numel)` + BINPERSID.
    pub fn storage(&mut self, class: &str, key: &str, numel: usize) -> &mut Self {
        self.op(b'(')
            .str("storage")
            .global("torch", class)
            .str(key)
            .str("cpu");
        self.int(numel).op(b't').op(b'Q')
    }
}
