//! Every WGSL file parses and validates with naga, so shader errors show without a GPU.

use std::path::Path;

use sigmax::shaders::{Reduction, ShaderFamily};

/// Parses and validates `family` built with `reduction`, with the capabilities a device with
/// `Features::SUBGROUP` grants when the reduction uses subgroups.
fn validate(family: ShaderFamily, reduction: Reduction) -> naga::Module {
    let source = family.source(reduction);
    let context = format!("{} with {}", family.file_name(), reduction.file_name());
    let module = naga::front::wgsl::parse_str(&source).unwrap_or_else(|error| {
        panic!("{context}: {}", error.emit_to_string(&source));
    });
    let capabilities = match reduction {
        Reduction::Workgroup => naga::valid::Capabilities::default(),
        Reduction::Subgroup => naga::valid::Capabilities::SUBGROUP,
    };
    let mut validator =
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), capabilities);
    validator.subgroup_stages(naga::valid::ShaderStages::COMPUTE);
    validator.subgroup_operations(naga::valid::SubgroupOperationSet::all());
    if let Err(error) = validator.validate(&module) {
        panic!("{context}: {}", error.emit_to_string(&source));
    }
    module
}

#[test]
fn common_validates_alone() {
    let module = naga::front::wgsl::parse_str(sigmax::shaders::COMMON).unwrap();
    let mut validator = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::default(),
    );
    validator.validate(&module).expect("common.wgsl validates");
}

#[test]
fn every_family_validates() {
    for family in ShaderFamily::ALL {
        for reduction in Reduction::ALL {
            validate(family, reduction);
        }
    }
}

#[test]
fn every_shader_file_belongs_to_a_family() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    for entry in std::fs::read_dir(&folder).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let known = name == "common.wgsl"
            || ShaderFamily::ALL
                .iter()
                .any(|family| family.file_name() == name)
            || Reduction::ALL
                .iter()
                .any(|reduction| reduction.file_name() == name);
        assert!(
            known,
            "shaders/{name} is not listed in ShaderFamily::ALL or Reduction::ALL, so no test validates it"
        );
    }
}

/// Returns the value of the u32 constant `name` in `family`'s module.
fn u32_constant(family: ShaderFamily, name: &str) -> u32 {
    let module = validate(family, Reduction::Workgroup);
    let (_, constant) = module
        .constants
        .iter()
        .find(|(_, constant)| constant.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("{} declares no constant {name}", family.file_name()));
    match module.global_expressions[constant.init] {
        naga::Expression::Literal(naga::Literal::U32(value)) => value,
        ref other => panic!("{name} is not a u32 literal: {other:?}"),
    }
}

#[test]
fn workgroup_size_matches_planner() {
    for family in ShaderFamily::ALL {
        assert_eq!(
            u32_constant(family, "WG_SIZE"),
            sigmax::planner::WORKGROUP_SIZE,
            "WG_SIZE in shaders/common.wgsl differs from planner::WORKGROUP_SIZE"
        );
    }
}

#[test]
fn sigmoid_tile_matches_planner() {
    assert_eq!(
        u32_constant(ShaderFamily::Sigmoid, "ELEMENTS_PER_INVOCATION"),
        sigmax::planner::SIGMOID_ELEMENTS_PER_INVOCATION,
        "shaders/sigmoid.wgsl and planner::SIGMOID_ELEMENTS_PER_INVOCATION differ"
    );
}
