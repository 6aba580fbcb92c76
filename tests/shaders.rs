//! Every WGSL file parses and validates with naga, so shader errors show without a GPU.

use std::path::Path;

use sigmax::shaders::ShaderFamily;

fn validate(family: ShaderFamily) -> naga::Module {
    let source = family.source();
    let module = naga::front::wgsl::parse_str(&source).unwrap_or_else(|error| {
        panic!("{}: {}", family.file_name(), error.emit_to_string(&source));
    });
    let mut validator = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::default(),
    );
    if let Err(error) = validator.validate(&module) {
        panic!("{}: {}", family.file_name(), error.emit_to_string(&source));
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
        validate(family);
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
                .any(|family| family.file_name() == name);
        assert!(
            known,
            "shaders/{name} is not listed in ShaderFamily::ALL, so no test validates it"
        );
    }
}

#[test]
fn workgroup_size_matches_planner() {
    let module = validate(ShaderFamily::Softmax);
    let (_, constant) = module
        .constants
        .iter()
        .find(|(_, constant)| constant.name.as_deref() == Some("WG_SIZE"))
        .expect("common.wgsl declares WG_SIZE");
    let value = &module.global_expressions[constant.init];
    assert_eq!(
        *value,
        naga::Expression::Literal(naga::Literal::U32(sigmax::planner::WORKGROUP_SIZE)),
        "WG_SIZE in shaders/common.wgsl differs from planner::WORKGROUP_SIZE"
    );
}
