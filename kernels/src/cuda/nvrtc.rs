//! Compiling kernel modules with NVRTC (loaded dynamically through cudarc; no driver call and
//! no GPU needed, so CI compiles every kernel on CPU-only machines).

use super::arch::{compile_options, Arch, Target};
use super::error::CompileError;
use super::registry::{KernelSource, HEADERS};
use cudarc::nvrtc::sys;
use std::ffi::{c_char, c_int, CStr, CString};

/// A compiled module image.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    pub target: Target,
    /// PTX text (UTF-8, no trailing NUL) or CUBIN bytes.
    pub image: Vec<u8>,
    /// NVRTC's log (warnings); empty when silent.
    pub log: String,
}

impl Compiled {
    /// The PTX text, for [`Target::Ptx`] images.
    pub fn ptx(&self) -> Option<&str> {
        match self.target {
            Target::Ptx => std::str::from_utf8(&self.image).ok(),
            Target::Cubin => None,
        }
    }
}

/// Whether NVRTC can be loaded; its version `(major, minor)` when it can. Only tries to load
/// the library before any NVRTC call (cudarc panics on a missing library otherwise).
pub fn version() -> Result<(i32, i32), CompileError> {
    // SAFETY: only attempts dlopen of the candidate library names.
    if !unsafe { sys::is_culib_present() } {
        return Err(CompileError::Unavailable(
            "libnvrtc.so not found on the library path (install NVIDIA's nvidia-cuda-nvrtc-cu12 \
             wheel, e.g. scripts/install-nvrtc.sh, and add its lib/ to LD_LIBRARY_PATH)"
                .into(),
        ));
    }
    let (mut major, mut minor): (c_int, c_int) = (0, 0);
    // SAFETY: the library is present; the out-pointers are valid.
    check("nvrtcVersion", unsafe {
        sys::nvrtcVersion(&mut major, &mut minor)
    })?;
    Ok((major, minor))
}

fn error_string(rc: sys::nvrtcResult) -> String {
    // SAFETY: nvrtcGetErrorString returns a static NUL-terminated string (or null).
    let p = unsafe { sys::nvrtcGetErrorString(rc) };
    if p.is_null() {
        format!("{rc:?}")
    } else {
        // SAFETY: non-null, NUL-terminated, static.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

fn check(call: &'static str, rc: sys::nvrtcResult) -> Result<(), CompileError> {
    if rc == sys::nvrtcResult::NVRTC_SUCCESS {
        Ok(())
    } else {
        Err(CompileError::Nvrtc {
            call,
            message: error_string(rc),
        })
    }
}

fn cstring(what: &str, s: &str) -> Result<CString, CompileError> {
    CString::new(s).map_err(|_| CompileError::Nvrtc {
        call: "nvrtcCreateProgram",
        message: format!("{what} contains a NUL byte"),
    })
}

/// An NVRTC program, destroyed on drop.
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: created by nvrtcCreateProgram and destroyed only here. A failure to destroy
        // only leaks the program.
        let _ = unsafe { sys::nvrtcDestroyProgram(&mut self.0) };
    }
}

impl Program {
    fn log(&self) -> String {
        let mut n = 0usize;
        // SAFETY: valid program, valid out-pointer.
        if unsafe { sys::nvrtcGetProgramLogSize(self.0, &mut n) } != sys::nvrtcResult::NVRTC_SUCCESS
        {
            return String::new();
        }
        let mut buf = vec![0u8; n.max(1)];
        // SAFETY: buf holds n bytes as NVRTC requires.
        if unsafe { sys::nvrtcGetProgramLog(self.0, buf.as_mut_ptr() as *mut c_char) }
            != sys::nvrtcResult::NVRTC_SUCCESS
        {
            return String::new();
        }
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).trim().to_string()
    }

    fn image(&self, target: Target) -> Result<Vec<u8>, CompileError> {
        let mut n = 0usize;
        let (size_call, get_call) = match target {
            Target::Ptx => ("nvrtcGetPTXSize", "nvrtcGetPTX"),
            Target::Cubin => ("nvrtcGetCUBINSize", "nvrtcGetCUBIN"),
        };
        // SAFETY: valid program, valid out-pointer.
        let rc = unsafe {
            match target {
                Target::Ptx => sys::nvrtcGetPTXSize(self.0, &mut n),
                Target::Cubin => sys::nvrtcGetCUBINSize(self.0, &mut n),
            }
        };
        check(size_call, rc)?;
        let mut buf = vec![0u8; n];
        // SAFETY: buf holds the n bytes NVRTC reported.
        let rc = unsafe {
            match target {
                Target::Ptx => sys::nvrtcGetPTX(self.0, buf.as_mut_ptr() as *mut c_char),
                Target::Cubin => sys::nvrtcGetCUBIN(self.0, buf.as_mut_ptr() as *mut c_char),
            }
        };
        check(get_call, rc)?;
        if target == Target::Ptx {
            while buf.last() == Some(&0) {
                buf.pop();
            }
        }
        Ok(buf)
    }
}

/// Compile one module for `arch` to PTX or CUBIN. A rejected source is
/// [`CompileError::Compile`] carrying NVRTC's log.
pub fn compile(
    src: &KernelSource,
    arch: Arch,
    target: Target,
    include_paths: &[String],
) -> Result<Compiled, CompileError> {
    version()?;
    let arch = src.arch_for(arch);
    let c_src = cstring(src.file, src.source)?;
    let c_name = cstring("file name", src.file)?;
    let header_texts = HEADERS
        .iter()
        .map(|h| cstring(h.name, h.source))
        .collect::<Result<Vec<_>, _>>()?;
    let header_names = HEADERS
        .iter()
        .map(|h| cstring("header name", h.name))
        .collect::<Result<Vec<_>, _>>()?;
    let text_ptrs: Vec<*const c_char> = header_texts.iter().map(|c| c.as_ptr()).collect();
    let name_ptrs: Vec<*const c_char> = header_names.iter().map(|c| c.as_ptr()).collect();

    let mut raw: sys::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: every pointer refers to a live NUL-terminated string; the arrays hold
    // HEADERS.len() entries each.
    let rc = unsafe {
        sys::nvrtcCreateProgram(
            &mut raw,
            c_src.as_ptr(),
            c_name.as_ptr(),
            HEADERS.len() as c_int,
            text_ptrs.as_ptr(),
            name_ptrs.as_ptr(),
        )
    };
    check("nvrtcCreateProgram", rc)?;
    let prog = Program(raw);

    let options = compile_options(arch, target, include_paths);
    let c_opts = options
        .iter()
        .map(|o| cstring("option", o))
        .collect::<Result<Vec<_>, _>>()?;
    let opt_ptrs: Vec<*const c_char> = c_opts.iter().map(|c| c.as_ptr()).collect();
    // SAFETY: valid program; opt_ptrs holds options.len() live C strings.
    let rc =
        unsafe { sys::nvrtcCompileProgram(prog.0, opt_ptrs.len() as c_int, opt_ptrs.as_ptr()) };
    let log = prog.log();
    if rc != sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(CompileError::Compile {
            module: src.name.to_string(),
            arch: arch.for_target(target),
            log: if log.is_empty() {
                error_string(rc)
            } else {
                log
            },
        });
    }
    let image = prog.image(target)?;
    Ok(Compiled { target, image, log })
}

/// `.entry` names declared in PTX text (for checking a module against its registry entry).
pub fn ptx_entries(ptx: &str) -> Vec<String> {
    ptx.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let rest = l
                .strip_prefix(".visible .entry ")
                .or_else(|| l.strip_prefix(".entry "))?;
            Some(rest.split(['(', ' ']).next().unwrap_or("").to_string())
        })
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptx_entry_names_are_parsed() {
        let ptx = ".version 8.8\n.visible .entry adam_multi(\n.param .u64 p\n)\n.entry other (\n";
        assert_eq!(ptx_entries(ptx), vec!["adam_multi", "other"]);
    }
}
