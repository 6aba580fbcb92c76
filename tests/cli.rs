//! The `sigmax` binary on real files: results, `--verify`, and bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sigmax::io::read_npy;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn sigmax(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sigmax"))
        .args(args)
        .env("NODEVICE_SELECT", "1")
        .output()
        .expect("the sigmax binary runs")
}

/// `--backend` values to run: the CPU path, and `auto` unless no adapter exists outside CI.
fn cli_backends() -> Vec<&'static str> {
    let mut backends = vec!["cpu"];
    if !common::gpu_engines(Default::default()).is_empty() {
        backends.push("auto");
    }
    backends
}

/// Runs `sigmax OP --input INPUT --output OUTPUT` followed by `extra`.
fn run_op(op: &str, input: &Path, output: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        op,
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ];
    args.extend(extra);
    sigmax(&args)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts that a run exited with 0, showing its stderr otherwise.
fn assert_succeeded(output: &Output, context: &str) {
    assert_eq!(
        output.status.code(),
        Some(0),
        "{context}: {}",
        stderr(output)
    );
}

#[test]
fn softmax_digits_verifies() {
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("proba.npy");
    let expected = read_npy(&data("digits_proba.npy")).unwrap();
    for backend in cli_backends() {
        let input = data("digits_logits.npy");
        let output = run_op("softmax", &input, &out, &["--backend", backend, "--verify"]);
        assert_succeeded(&output, backend);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains("max ULP error"), "{backend}: {stdout}");
        assert!(stdout.contains("met"), "{backend}: {stdout}");

        let got = read_npy(&out).unwrap();
        assert_eq!(got.shape, [1797, 10]);
        common::assert_close(&got.data, &expected.data, 1e-6, backend);
    }
}

#[test]
fn sigmoid_breast_cancer_verifies() {
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("proba.npy");
    let proba = read_npy(&data("bc_proba.npy")).unwrap();
    let positive: Vec<f32> = proba.data.chunks(2).map(|row| row[1]).collect();
    for backend in cli_backends() {
        let input = data("bc_logits.npy");
        // Short flags here, long ones through run_op elsewhere.
        let (input_text, out_text) = (input.to_str().unwrap(), out.to_str().unwrap());
        let args = [
            "sigmoid", "-i", input_text, "-o", out_text, "-b", backend, "--verify",
        ];
        let output = sigmax(&args);
        assert_succeeded(&output, backend);
        let got = read_npy(&out).unwrap();
        assert_eq!(got.shape, [569]);
        common::assert_close(&got.data, &positive, 1e-6, backend);
    }
}

/// Writes raw bytes to `name` in `folder` and returns the path.
fn write_bytes(folder: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = folder.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A .npy header with `descr`, `fortran_order` and `shape`, padded as numpy pads it.
fn npy_header(descr: &str, fortran: bool, shape: &str) -> Vec<u8> {
    let order = if fortran { "True" } else { "False" };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes
}

#[test]
fn bad_files_exit_2_without_output() {
    let folder = tempfile::tempdir().unwrap();
    let dir = folder.path();

    let mut float64 = npy_header("<f8", false, "(2,)");
    float64.extend([0u8; 16]);
    let mut fortran = npy_header("<f4", true, "(2, 2)");
    fortran.extend([0u8; 16]);
    let mut truncated = npy_header("<f4", false, "(10,)");
    truncated.extend([0u8; 12]);
    let valid = std::fs::read(data("bc_logits.npy")).unwrap();

    let cases = [
        (
            "float64",
            write_bytes(dir, "float64.npy", &float64),
            "dtype",
        ),
        (
            "fortran",
            write_bytes(dir, "fortran.npy", &fortran),
            "Fortran",
        ),
        (
            "truncated",
            write_bytes(dir, "truncated.npy", &truncated),
            "truncated",
        ),
        (
            "corrupt header",
            write_bytes(dir, "corrupt.npy", &valid[..30]),
            ".npy",
        ),
        (
            "not npy",
            write_bytes(dir, "text.npy", b"logits,1,2,3\n"),
            "not a .npy file",
        ),
        ("missing", dir.join("missing.npy"), "not found"),
    ];
    for (case, input, problem) in cases {
        for op in ["sigmoid", "softmax"] {
            let out = dir.join(format!("{case}-{op}-out.npy"));
            let output = run_op(op, &input, &out, &["--backend", "cpu"]);
            let message = stderr(&output);
            assert_eq!(output.status.code(), Some(2), "{case} {op}: {message}");
            assert!(
                message.contains(input.to_str().unwrap()),
                "{case} {op}: message does not name the file: {message}"
            );
            assert!(
                message.contains(problem),
                "{case} {op}: message does not say `{problem}`: {message}"
            );
            assert_eq!(
                message.trim().lines().count(),
                1,
                "{case} {op}: not one line: {message}"
            );
            assert!(!out.exists(), "{case} {op}: an output file was written");
        }
    }
}

#[test]
fn missing_output_folder_exits_2() {
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("no/such/folder/out.npy");
    let input = data("bc_logits.npy");
    let output = run_op("sigmoid", &input, &out, &["-b", "cpu"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("does not exist"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn unavailable_gpu_backend_is_an_error() {
    // No Linux machine has a Metal or DX12 adapter.
    if !cfg!(target_os = "linux") {
        return;
    }
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("out.npy");
    let input = data("bc_logits.npy");
    let output = run_op("sigmoid", &input, &out, &["-b", "metal"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("no GPU adapter found for `metal`"),
        "{}",
        stderr(&output)
    );
    assert!(!out.exists());
}

#[test]
fn adapters_lists_limits() {
    let output = sigmax(&["adapters"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    if !common::gpu_engines(Default::default()).is_empty() {
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains("max storage binding"), "{stdout}");
        assert!(stdout.contains("workgroups per dimension"), "{stdout}");
    }
}

#[test]
fn bench_writes_table_and_json() {
    let folder = tempfile::tempdir().unwrap();
    let json = folder.path().join("bench.json");
    for backend in cli_backends() {
        let args = [
            "bench",
            "--backend",
            backend,
            "--shape",
            "64x8",
            "--shape",
            "300",
            "--runs",
            "1",
            "--json",
            json.to_str().unwrap(),
        ];
        let output = sigmax(&args);
        assert_succeeded(&output, backend);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains("copy ratio"), "{backend}: {stdout}");

        let records: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        let records = records.as_array().expect("a JSON array");
        // Two shapes times two ops, on the CPU and, for `auto`, on the GPU.
        let expected = if backend == "cpu" { 4 } else { 8 };
        assert_eq!(records.len(), expected, "{backend}: {records:?}");
        for record in records {
            for key in [
                "op",
                "shape",
                "backend",
                "adapter",
                "kernel_ms",
                "end_to_end_ms",
                "gbps",
                "copy_gbps",
                "copy_ratio",
                "timer",
                "temperature",
            ] {
                assert!(
                    record.get(key).is_some(),
                    "{backend}: `{key}` missing in {record}"
                );
            }
            assert!(record["kernel_ms"].as_f64().unwrap() > 0.0, "{record}");
        }
        assert_eq!(records[0]["shape"], serde_json::json!([64, 8]));
    }
}

#[test]
fn bench_rejects_invalid_shape() {
    let output = sigmax(&["bench", "--backend", "cpu", "--shape", "12xabc"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("12xabc"), "{}", stderr(&output));
}

#[test]
fn adapter_and_backend_conflict() {
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("out.npy");
    let input = data("bc_logits.npy");
    let output = run_op("sigmoid", &input, &out, &["-b", "gl", "-a", "0"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("cannot be used with"),
        "{}",
        stderr(&output)
    );
    assert!(!out.exists());
}

#[test]
fn adapter_index_out_of_range_is_an_error() {
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("out.npy");
    let input = data("bc_logits.npy");
    let output = run_op("sigmoid", &input, &out, &["-a", "999"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("adapter 999"),
        "{}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("sigmax adapters"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn log_softmax_digits_verifies() {
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("log_proba.npy");
    let proba = read_npy(&data("digits_proba.npy")).unwrap();
    let log_proba: Vec<f32> = proba.data.iter().map(|&p| (p as f64).ln() as f32).collect();
    for backend in cli_backends() {
        let input = data("digits_logits.npy");
        let extra = ["--log", "--backend", backend, "--verify"];
        let output = run_op("softmax", &input, &out, &extra);
        assert_succeeded(&output, backend);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains("log-softmax"), "{backend}: {stdout}");
        assert!(
            stdout.contains("ULP of max(|reference|, 1)"),
            "{backend}: {stdout}"
        );

        let got = read_npy(&out).unwrap();
        assert_eq!(got.shape, [1797, 10]);
        // scikit-learn's probabilities are f64; their logs carry the f32 rounding of p.
        for (index, (&g, &e)) in got.data.iter().zip(&log_proba).enumerate() {
            let tolerance = 1e-6 * e.abs().max(1.0);
            assert!(
                (g - e).abs() <= tolerance,
                "{backend}: element {index}: {g} vs {e}"
            );
        }
    }
}

#[test]
fn elementwise_commands_verify() {
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("out.npy");
    for op in ["log-sigmoid", "silu"] {
        for backend in cli_backends() {
            let input = data("bc_logits.npy");
            let output = run_op(op, &input, &out, &["--backend", backend, "--verify"]);
            assert_eq!(
                output.status.code(),
                Some(0),
                "{op} {backend}: {}",
                stderr(&output)
            );
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(stdout.contains("met"), "{op} {backend}: {stdout}");
            assert_eq!(read_npy(&out).unwrap().shape, [569]);
        }
    }
}

#[test]
fn temperature_and_masked_rows() {
    let folder = tempfile::tempdir().unwrap();
    let input = folder.path().join("masked.npy");
    let logits = sigmax::io::Array {
        data: vec![f32::NEG_INFINITY, f32::NEG_INFINITY, 1.0, 3.0],
        shape: vec![2, 2],
    };
    sigmax::io::write_npy(&input, &logits).unwrap();
    let out = folder.path().join("out.npy");
    for backend in cli_backends() {
        let extra = [
            "--temperature",
            "2",
            "--masked-rows",
            "zero",
            "--backend",
            backend,
            "--verify",
        ];
        let output = run_op("softmax", &input, &out, &extra);
        assert_succeeded(&output, backend);
        let got = read_npy(&out).unwrap().data;
        assert_eq!(&got[..2], [0.0, 0.0], "{backend}");
        // softmax([1, 3] / 2) = [1 / (1 + e), e / (1 + e)].
        let e = std::f64::consts::E;
        assert!(
            (got[2] as f64 - 1.0 / (1.0 + e)).abs() < 1e-7,
            "{backend}: {got:?}"
        );
        assert!(
            (got[3] as f64 - e / (1.0 + e)).abs() < 1e-7,
            "{backend}: {got:?}"
        );
    }
}

#[test]
fn bad_temperature_is_rejected() {
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("out.npy");
    for temperature in ["0", "-1.5", "nan", "inf"] {
        let input = data("digits_logits.npy");
        let output = run_op("softmax", &input, &out, &["--temperature", temperature]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "T = {temperature}: {}",
            stderr(&output)
        );
        let message = stderr(&output);
        assert!(
            message.contains("temperature"),
            "T = {temperature}: {message}"
        );
        assert!(!out.exists(), "T = {temperature}: an output was written");
    }
}

#[test]
fn entropy_drops_last_axis() {
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("entropy.npy");
    let proba = read_npy(&data("digits_proba.npy")).unwrap();
    let expected: Vec<f64> = proba
        .data
        .chunks(10)
        .map(|row| -row.iter().map(|&p| p as f64 * (p as f64).ln()).sum::<f64>())
        .collect();
    for backend in cli_backends() {
        let input = data("digits_logits.npy");
        let extra = ["--bits", "--backend", backend, "--verify"];
        let output = run_op("entropy", &input, &out, &extra);
        assert_succeeded(&output, backend);
        let got = read_npy(&out).unwrap();
        assert_eq!(got.shape, [1797], "{backend}");
        for (row, (&g, &e)) in got.data.iter().zip(&expected).enumerate() {
            let bits = e / std::f64::consts::LN_2;
            assert!(
                (g as f64 - bits).abs() < 1e-5,
                "{backend}: row {row}: {g} vs {bits}"
            );
        }
    }
}

#[test]
fn softmax_with_mask_file() {
    let folder = tempfile::tempdir().unwrap();
    let input = data("digits_logits.npy");
    let mask = folder.path().join("mask.npy");
    // One row for every row: the first two classes masked out, the rest biased.
    let mut values = vec![0.5f32; 10];
    values[0] = f32::NEG_INFINITY;
    values[1] = f32::NEG_INFINITY;
    let row = sigmax::io::Array {
        data: values,
        shape: vec![10],
    };
    sigmax::io::write_npy(&mask, &row).unwrap();
    let out = folder.path().join("out.npy");
    for backend in cli_backends() {
        let extra = [
            "--mask",
            mask.to_str().unwrap(),
            "--backend",
            backend,
            "--verify",
        ];
        let output = run_op("softmax", &input, &out, &extra);
        assert_succeeded(&output, backend);
        let got = read_npy(&out).unwrap();
        for row in got.data.chunks(10) {
            assert_eq!(&row[..2], [0.0, 0.0], "{backend}");
        }
    }

    // A mask of another shape is bad input.
    let wrong = sigmax::io::Array {
        data: vec![0.0; 7],
        shape: vec![7],
    };
    sigmax::io::write_npy(&mask, &wrong).unwrap();
    let _ = std::fs::remove_file(&out);
    let output = run_op("softmax", &input, &out, &["--mask", mask.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("[7]"), "{}", stderr(&output));
    assert!(!out.exists());
}

#[test]
fn outputs_without_verify_match() {
    // Without --verify the CLI computes in place; the files must be the same.
    let folder = tempfile::tempdir().unwrap();
    let input = data("digits_logits.npy");
    let checked = folder.path().join("checked.npy");
    let plain = folder.path().join("plain.npy");
    for backend in cli_backends() {
        for (op, extra) in [
            ("softmax", None),
            ("softmax", Some("--log")),
            ("silu", None),
        ] {
            let mut args = vec!["--backend", backend];
            args.extend(extra);
            let mut verified = args.clone();
            verified.push("--verify");
            let first = run_op(op, &input, &checked, &verified);
            assert_eq!(
                first.status.code(),
                Some(0),
                "{op} {backend}: {}",
                stderr(&first)
            );
            let second = run_op(op, &input, &plain, &args);
            assert_eq!(
                second.status.code(),
                Some(0),
                "{op} {backend}: {}",
                stderr(&second)
            );
            let a = read_npy(&checked).unwrap();
            let b = read_npy(&plain).unwrap();
            assert_eq!(a.shape, b.shape, "{op} {backend}");
            assert_eq!(a.data, b.data, "{op} {extra:?} {backend}");
        }
    }
}

#[test]
fn output_that_is_a_folder_fails_first() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().to_str().unwrap();
    let output = sigmax(&[
        "bench",
        "--backend",
        "cpu",
        "--shape",
        "4x4",
        "--json",
        path,
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("is a folder"),
        "{}",
        stderr(&output)
    );
    // It fails before measuring: no table on stdout.
    assert!(
        output.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );

    let input = data("bc_logits.npy");
    let output = run_op("sigmoid", &input, folder.path(), &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
}

#[test]
fn bench_rejects_dimension_too_large() {
    let output = sigmax(&[
        "bench",
        "--backend",
        "cpu",
        "--shape",
        "99999999999999999999x2",
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("too large"), "{}", stderr(&output));
}
