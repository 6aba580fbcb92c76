//! Engine behaviour that needs a device: typed errors instead of panics, adapter choice.

mod common;

use sigmax::{AdapterChoice, BufferRegion, Engine, EngineOptions, Error, Op};

#[test]
fn validation_error_is_returned_not_panicked() {
    for engine in common::gpu_engines(Default::default()) {
        // A buffer without COPY_SRC cannot be read back: wgpu reports a validation error.
        let buffer = engine.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("no copy source"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let mut output = [0.0f32; 4];
        let result = engine.read_f32(&buffer, 0, &mut output);
        assert!(
            matches!(result, Err(Error::Validation { .. })),
            "{}: expected a validation error, got {result:?}",
            engine.adapter_info().name
        );
    }
}

#[test]
fn launcher_rejects_short_output_buffer() {
    for engine in common::gpu_engines(Default::default()) {
        let input = engine.upload("input", &[0.5; 64]).unwrap();
        let output = engine.upload("output", &[0.0; 16]).unwrap();
        let mut encoder = engine.device().create_command_encoder(&Default::default());
        let result = engine.record_sigmoid(
            &mut encoder,
            BufferRegion::whole(&input),
            BufferRegion::whole(&output),
            64,
        );
        assert!(
            matches!(result, Err(Error::InvalidArgument(_))),
            "{result:?}"
        );
    }
}

#[test]
fn launcher_rejects_same_buffer() {
    for engine in common::gpu_engines(Default::default()) {
        let buffer = engine.upload("logits", &[0.5; 64]).unwrap();
        let region = BufferRegion::whole(&buffer);
        let mut encoder = engine.device().create_command_encoder(&Default::default());
        let result = engine.record_softmax(&mut encoder, region, region, 8, 8);
        assert!(
            matches!(result, Err(Error::InvalidArgument(_))),
            "{result:?}"
        );
        let result = engine.record_sigmoid(&mut encoder, region, region, 64);
        assert!(
            matches!(result, Err(Error::InvalidArgument(_))),
            "{result:?}"
        );
    }
}

#[test]
fn launcher_writes_at_offsets() {
    for engine in common::gpu_engines(Default::default()) {
        let _gl_context = engine.lock_gl_context();
        let logits = [1.0f32, 2.0, 3.0, -1.0, 0.0, 1.0];
        // Input and output start 3 and 5 elements into their buffers, off any binding alignment.
        let mut padded_input = vec![f32::NAN; 3];
        padded_input.extend(logits);
        let input = engine.upload("input", &padded_input).unwrap();
        let output = engine.upload("output", &[f32::NAN; 11]).unwrap();

        let mut encoder = engine.device().create_command_encoder(&Default::default());
        let from = BufferRegion {
            buffer: &input,
            offset: 12,
        };
        let to = BufferRegion {
            buffer: &output,
            offset: 20,
        };
        engine.record_softmax(&mut encoder, from, to, 2, 3).unwrap();
        engine.queue().submit([encoder.finish()]);

        let mut got = [0.0f32; 11];
        engine.read_f32(&output, 0, &mut got).unwrap();
        assert!(
            got[..5].iter().all(|v| v.is_nan()),
            "wrote before the offset: {got:?}"
        );
        let expected = sigmax::reference::softmax(&logits, 2, 3).unwrap();
        common::assert_close(&got[5..], &expected, 1e-7, &engine.adapter_info().name);
    }
}

/// Runs `op` on `logits` read `input_pad` elements into one buffer and written `output_pad`
/// elements into another, and returns what was written there.
fn run_at_offsets(
    engine: &Engine,
    op: Op,
    logits: &[f32],
    cols: usize,
    input_pad: usize,
    output_pad: usize,
) -> Vec<f32> {
    let _gl_context = engine.lock_gl_context();
    let mut padded = vec![f32::NAN; input_pad];
    padded.extend(logits);
    let input = engine.upload("input", &padded).unwrap();
    let output = engine
        .upload("output", &vec![f32::NAN; output_pad + logits.len()])
        .unwrap();

    let mut encoder = engine.device().create_command_encoder(&Default::default());
    let from = BufferRegion {
        buffer: &input,
        offset: 4 * input_pad as u64,
    };
    let to = BufferRegion {
        buffer: &output,
        offset: 4 * output_pad as u64,
    };
    let rows = (logits.len() / cols) as u64;
    match op {
        Op::Sigmoid => engine.record_sigmoid(&mut encoder, from, to, logits.len() as u64),
        Op::Softmax => engine.record_softmax(&mut encoder, from, to, rows, cols as u64),
        op => panic!("{} is not covered by the offset tests", op.name()),
    }
    .unwrap();
    engine.queue().submit([encoder.finish()]);

    let mut got = vec![0.0f32; logits.len()];
    engine
        .read_f32(&output, 4 * output_pad as u64, &mut got)
        .unwrap();
    got
}

#[test]
fn sigmoid_at_aligned_and_unaligned_offsets() {
    // 16-byte aligned regions take the vec4 kernel with a scalar tail; others run scalar.
    let logits: Vec<f32> = (0..1_003).map(|i| (i as f32 - 500.0) * 0.05).collect();
    let expected = sigmax::reference::sigmoid(&logits);
    for engine in common::gpu_engines(Default::default()) {
        for (input_pad, output_pad) in [(0, 0), (4, 4), (1, 4), (4, 3)] {
            let got = run_at_offsets(&engine, Op::Sigmoid, &logits, 1, input_pad, output_pad);
            let context = format!(
                "{} pads {input_pad}, {output_pad}",
                engine.adapter_info().name
            );
            common::assert_all_written(&got, &context);
            common::assert_close(&got, &expected, 1e-7, &context);
        }
    }
}

#[test]
fn softmax_at_aligned_and_unaligned_offsets() {
    // Rows of 8 in 16-byte aligned regions take the vec4 small-row kernel; others run scalar.
    let (rows, cols) = (300, 8);
    let logits: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 37) % 101) as f32 * 0.3 - 15.0)
        .collect();
    let expected = sigmax::reference::softmax(&logits, rows, cols).unwrap();
    for engine in common::gpu_engines(Default::default()) {
        for (input_pad, output_pad) in [(0, 0), (4, 8), (1, 0), (0, 3)] {
            let got = run_at_offsets(&engine, Op::Softmax, &logits, cols, input_pad, output_pad);
            let context = format!(
                "{} pads {input_pad}, {output_pad}",
                engine.adapter_info().name
            );
            common::assert_all_written(&got, &context);
            common::assert_close(&got, &expected, 4e-7, &context);
        }
    }
}

#[test]
fn name_choice_matches_substring() {
    let Some(adapter) = sigmax::list_adapters().into_iter().find(|a| a.compute) else {
        return;
    };
    let fragment = adapter.info.name.to_uppercase();
    let options = EngineOptions {
        adapter: AdapterChoice::Name(fragment),
        ..Default::default()
    };
    let engine = Engine::new(options).unwrap();
    assert_eq!(engine.adapter_info().name, adapter.info.name);
}

#[test]
fn unknown_adapter_name_is_an_error() {
    let options = EngineOptions {
        adapter: AdapterChoice::Name("no such adapter 1f4e".to_owned()),
        ..Default::default()
    };
    let result = Engine::new(options);
    assert!(matches!(result, Err(Error::NoAdapter { .. })), "{result:?}");
}
