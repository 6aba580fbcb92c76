//! WGSL sources of the kernel families.
//!
//! Each kernel file in `shaders/` is compiled together with `shaders/common.wgsl`, which holds
//! the workgroup size and the accurate `exp` that every kernel uses.

/// WGSL prepended to every kernel family.
pub const COMMON: &str = include_str!("../shaders/common.wgsl");

/// A kernel family: one WGSL file in `shaders/` and one launcher in `kernels`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShaderFamily {
    /// `shaders/sigmoid.wgsl`.
    Sigmoid,
    /// `shaders/softmax.wgsl`.
    Softmax,
}

impl ShaderFamily {
    /// Every family, so that tests can validate each file.
    pub const ALL: [ShaderFamily; 2] = [ShaderFamily::Sigmoid, ShaderFamily::Softmax];

    /// File name under `shaders/`.
    pub fn file_name(self) -> &'static str {
        match self {
            ShaderFamily::Sigmoid => "sigmoid.wgsl",
            ShaderFamily::Softmax => "softmax.wgsl",
        }
    }

    /// Returns the complete WGSL module: `common.wgsl` followed by the family's file.
    pub fn source(self) -> String {
        let kernel = match self {
            ShaderFamily::Sigmoid => include_str!("../shaders/sigmoid.wgsl"),
            ShaderFamily::Softmax => include_str!("../shaders/softmax.wgsl"),
        };
        format!("{COMMON}\n{kernel}")
    }
}
