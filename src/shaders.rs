//! WGSL sources of the kernel families.
//!
//! Each kernel file in `shaders/` is compiled after `shaders/common.wgsl`, which holds the
//! workgroup size and the accurate `exp` that every kernel uses. Kernels that reduce over a
//! workgroup also get one of the two reduction files, as the plan chooses.

/// WGSL placed before every kernel family.
pub const COMMON: &str = include_str!("../shaders/common.wgsl");

/// The way kernels reduce over a workgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reduction {
    /// A halving tree in workgroup memory, `shaders/reduce_workgroup.wgsl`; runs everywhere.
    Workgroup,
    /// Subgroup operations, `shaders/reduce_subgroup.wgsl`; needs `Features::SUBGROUP`.
    Subgroup,
}

impl Reduction {
    /// Both variants, so that tests can validate each.
    pub const ALL: [Reduction; 2] = [Reduction::Workgroup, Reduction::Subgroup];

    /// File name under `shaders/`.
    pub fn file_name(self) -> &'static str {
        match self {
            Reduction::Workgroup => "reduce_workgroup.wgsl",
            Reduction::Subgroup => "reduce_subgroup.wgsl",
        }
    }

    fn source(self) -> &'static str {
        match self {
            Reduction::Workgroup => include_str!("../shaders/reduce_workgroup.wgsl"),
            Reduction::Subgroup => include_str!("../shaders/reduce_subgroup.wgsl"),
        }
    }
}

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

    /// Whether the family's kernels reduce over a workgroup, and so depend on a [`Reduction`].
    pub fn reduces(self) -> bool {
        match self {
            ShaderFamily::Sigmoid => false,
            ShaderFamily::Softmax => true,
        }
    }

    /// Returns the complete WGSL module: `common.wgsl`, the reduction file if the family
    /// reduces, and the family's file.
    pub fn source(self, reduction: Reduction) -> String {
        let kernel = match self {
            ShaderFamily::Sigmoid => include_str!("../shaders/sigmoid.wgsl"),
            ShaderFamily::Softmax => include_str!("../shaders/softmax.wgsl"),
        };
        if self.reduces() {
            format!("{COMMON}\n{}\n{kernel}", reduction.source())
        } else {
            format!("{COMMON}\n{kernel}")
        }
    }
}
