//! Kernels of compiled models: the hot loops generated code calls (int8 GEMM with fused requantization,
//! depthwise convolution, elementwise and pooling ops, layout changes). Every kernel computes exactly what
//! docs/semantics.md defines, so its bytes equal the reference interpreter's: runtime/tests/kernels.rs
//! holds every ISA variant of the GEMM (plain and implicit convolutions) and depthwise kernels to scalar
//! references on random shapes, and tests/codegen.rs every kernel to the interpreter on whole networks.
pub mod dwconv;
#[cfg(target_arch = "x86_64")]
mod dwconv_avx2;
pub mod dwvnni;
pub mod elementwise;
pub mod epilogue;
pub mod fconv;
#[cfg(target_arch = "x86_64")]
mod fconv_avx2;
#[cfg(target_arch = "x86_64")]
mod fconv_narrow;
pub mod fgemm;
#[cfg(target_arch = "x86_64")]
mod fgemm_avx2;
#[cfg(target_arch = "x86_64")]
mod fgemm_shift;
pub mod float;
pub mod fnhwc;
pub mod fnhwc_tasks;
pub mod fpool;
pub mod gemm;
#[cfg(target_arch = "x86_64")]
mod gemm_avx2;
pub mod im2col;
pub mod pool;
pub mod qpool;
pub mod rows;
pub mod wideconv;

/// Which instruction-set variant of the kernels a compiled model uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust, no target features: runs on any x86-64 (and elsewhere).
    Scalar,
    /// AVX2 + FMA (x86-64-v3): an exact vpmaddwd GEMM microkernel, the other kernels portable Rust
    /// compiled with these features.
    Avx2,
    /// AVX-512 with VNNI: vpdpbusd GEMM microkernels.
    Avx512Vnni,
}

impl Isa {
    /// The best variant this CPU runs.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512vnni")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx512Vnni;
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    }

    /// Whether this CPU can run kernels of this variant.
    pub fn supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            Isa::Avx2 => Isa::detect() != Isa::Scalar,
            Isa::Avx512Vnni => Isa::detect() == Isa::Avx512Vnni,
        }
    }

    /// `--target-cpu` names: native, x86-64-v4 (AVX-512 VNNI), x86-64-v3 (AVX2), x86-64 (portable).
    pub fn from_target_cpu(name: &str) -> Option<Isa> {
        Some(match name {
            "native" => Isa::detect(),
            "x86-64-v4" | "avx512-vnni" => Isa::Avx512Vnni,
            "x86-64-v3" | "avx2" => Isa::Avx2,
            "x86-64" | "scalar" => Isa::Scalar,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "x86-64",
            Isa::Avx2 => "x86-64-v3",
            Isa::Avx512Vnni => "x86-64-v4",
        }
    }

    pub fn code(self) -> u64 {
        match self {
            Isa::Scalar => 0,
            Isa::Avx2 => 1,
            Isa::Avx512Vnni => 2,
        }
    }

    pub fn from_code(c: u64) -> Isa {
        match c {
            2 => Isa::Avx512Vnni,
            1 => Isa::Avx2,
            _ => Isa::Scalar,
        }
    }
}

/// Defines `fn name(isa: Isa, args…)` that runs `body` compiled for `isa`'s target features: the portable
/// kernels are written so LLVM vectorizes them, and this multiversioning lets one binary carry all
/// variants.
macro_rules! multiversion {
    (fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        #[allow(clippy::too_many_arguments)]
        fn $name(isa: $crate::kernels::Isa, $($arg: $ty),*) {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn imp($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
            #[allow(clippy::too_many_arguments)]
            fn v4($($arg: $ty),*) { imp($($arg),*) }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            fn v3($($arg: $ty),*) { imp($($arg),*) }
            match isa {
                // SAFETY: an Isa other than Scalar is only used after Isa::supported() said the CPU has
                // its features (compiled plans check it before running any kernel).
                #[cfg(target_arch = "x86_64")]
                $crate::kernels::Isa::Avx512Vnni => unsafe { v4($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                $crate::kernels::Isa::Avx2 => unsafe { v3($($arg),*) },
                _ => imp($($arg),*),
            }
        }
    };
}
pub(crate) use multiversion;

/// The bounds of a fused activation that is a clamp (none, ReLU, Clip), which the SIMD kernels apply in
/// registers as min(hi, max(lo, v)) — the bound first, so a NaN comes through as in the interpreter; None
/// for other activations, which the kernels apply element by element.
pub(crate) fn clamp_bounds(act: Option<qcc_ir::Act>) -> Option<(f32, f32)> {
    match act {
        None => Some((f32::NEG_INFINITY, f32::INFINITY)),
        Some(qcc_ir::Act::Relu) => Some((0.0, f32::INFINITY)),
        Some(qcc_ir::Act::Clip { min, max }) => Some((min, max)),
        Some(_) => None,
    }
}
