//! The `sigmax` command line: sigmoid and softmax of .npy files on a GPU or the CPU, with an
//! optional check against the f64 reference.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

mod cli_bench;

use clap::builder::NonEmptyStringValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};
use sigmax::io::{self, Array};
use sigmax::verify::{self, Bound};
use sigmax::{
    AdapterChoice, Backend, Engine, EngineOptions, EntropyUnit, Error, MaskedRows, Op,
    SoftmaxOptions,
};

/// Exit code of bad input: a missing or malformed file, or an invalid argument.
const EXIT_BAD_INPUT: u8 = 2;
/// Exit code of `--verify` when a result exceeds the documented error bound.
const EXIT_VERIFY_FAILED: u8 = 3;

#[derive(Parser)]
#[command(
    version,
    about = "Sigmoid and softmax on any GPU through WGSL, checked against an f64 reference"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Logistic sigmoid of every element.
    Sigmoid(OpArgs),
    /// Log of the sigmoid of every element, min(x, 0) - log1p(exp(-|x|)).
    LogSigmoid(OpArgs),
    /// SiLU (swish) of every element, x * sigmoid(x).
    Silu(OpArgs),
    /// Softmax or log-softmax over the last axis; a 1-D input is one row.
    Softmax(SoftmaxArgs),
    /// Entropy of the softmax distribution of each row (nats unless --bits); the output has
    /// the input's shape without its last axis.
    Entropy(EntropyArgs),
    /// List every adapter found, with the limits that matter to sigmax.
    Adapters,
    /// Time each op on the GPU and the CPU, next to a copy of the same bytes.
    Bench(BenchArgs),
}

#[derive(Args)]
struct BenchArgs {
    /// GPU to measure beside the CPU backend; `cpu` measures the CPU backend alone.
    #[arg(long, short, value_enum, default_value_t = BackendArg::Auto)]
    backend: BackendArg,
    /// Adapter to measure: a number from `sigmax adapters`, or text its name contains.
    #[arg(long, short, conflicts_with = "backend", value_parser = NonEmptyStringValueParser::new())]
    adapter: Option<String>,
    /// Shape to measure, as ROWSxCOLS or N; repeat for several. Without it, a default list of
    /// sigmoid and softmax shapes runs.
    #[arg(long, short, value_parser = cli_bench::parse_shape)]
    shape: Vec<Vec<usize>>,
    /// Op to measure on each `--shape`; repeat for several. Defaults to sigmoid and softmax.
    #[arg(long, value_enum)]
    op: Vec<OpArg>,
    /// Temperature T > 0 of the softmax ops, which the elementwise ops ignore.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    temperature: f32,
    /// Timed runs per measurement, after one warm-up run; the median is reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Also write the measurements to this file as a JSON array.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Another tool's times for the same shapes, as JSON in the schema of `--json` (such as
    /// the output of benches/compare_python.py): adds a table of speedups against them.
    #[arg(long)]
    baseline: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OpArg {
    Sigmoid,
    LogSigmoid,
    Silu,
    Softmax,
    LogSoftmax,
}

impl OpArg {
    fn op(self) -> Op {
        match self {
            OpArg::Sigmoid => Op::Sigmoid,
            OpArg::LogSigmoid => Op::LogSigmoid,
            OpArg::Silu => Op::Silu,
            OpArg::Softmax => Op::Softmax,
            OpArg::LogSoftmax => Op::LogSoftmax,
        }
    }
}

#[derive(Args)]
struct SoftmaxArgs {
    #[command(flatten)]
    common: OpArgs,
    /// Write log-softmax, (z - max) - log(sum of exp(z - max)), instead of softmax.
    #[arg(long)]
    log: bool,
    /// Additive mask .npy (float32), added to the scaled logits before the max: the input's
    /// shape, or one row (the input's last axis) for every row. -inf excludes an entry.
    #[arg(long)]
    mask: Option<PathBuf>,
    #[command(flatten)]
    distribution: DistributionArgs,
}

#[derive(Args)]
struct EntropyArgs {
    #[command(flatten)]
    common: OpArgs,
    /// Write the entropy in bits (base-2 logarithms) instead of nats.
    #[arg(long)]
    bits: bool,
    #[command(flatten)]
    distribution: DistributionArgs,
}

/// Options of the softmax distribution, shared by `softmax` and `entropy`.
#[derive(Args)]
struct DistributionArgs {
    /// Temperature T > 0: softmax of x / T, the Boltzmann distribution.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    temperature: f32,
    /// Factor S > 0 applied to the logits before the max, such as 1 / sqrt(d) in attention.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    scale: f32,
    /// Output of rows whose logits are all -inf: `nan` as PyTorch gives, or `zero` (-inf for
    /// log-softmax), as attention masks want.
    #[arg(long, value_enum, default_value_t = MaskedRowsArg::Nan)]
    masked_rows: MaskedRowsArg,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum MaskedRowsArg {
    Nan,
    Zero,
}

impl DistributionArgs {
    fn options(&self, log: bool) -> SoftmaxOptions {
        SoftmaxOptions {
            log,
            temperature: self.temperature,
            scale: self.scale,
            masked_rows: match self.masked_rows {
                MaskedRowsArg::Nan => MaskedRows::Nan,
                MaskedRowsArg::Zero => MaskedRows::Zero,
            },
        }
    }
}

/// The computation a command runs.
#[derive(Clone, Copy)]
enum Job {
    Elementwise(Op),
    Softmax(SoftmaxOptions),
    Entropy(SoftmaxOptions, EntropyUnit),
}

impl Job {
    fn op(self) -> Op {
        match self {
            Job::Elementwise(op) => op,
            Job::Softmax(options) => options.op(),
            Job::Entropy(..) => Op::Entropy,
        }
    }

    /// Returns the output's shape for an input of `shape`: the entropy drops the last axis.
    fn output_shape(self, shape: &[usize]) -> Vec<usize> {
        match self {
            Job::Entropy(..) => shape[..shape.len().saturating_sub(1)].to_vec(),
            _ => shape.to_vec(),
        }
    }
}

#[derive(Args)]
struct OpArgs {
    /// Input .npy file: little-endian float32, C order, any number of dimensions.
    #[arg(long, short)]
    input: PathBuf,
    /// Output .npy file, written with the input's shape. Replaced only when the run succeeds.
    #[arg(long, short)]
    output: PathBuf,
    /// Device to compute on. `auto` runs each call on the CPU backend or the best GPU adapter,
    /// whichever a cost model measured on first use predicts faster, transfers included.
    /// `cpu` is the fast CPU backend, and `reference` the f64 reference that `--verify`
    /// compares with.
    #[arg(long, short, value_enum, default_value_t = BackendArg::Auto)]
    backend: BackendArg,
    /// Adapter to run on instead of a backend's best: a number from `sigmax adapters`, or text
    /// that the adapter's name contains (the best match is taken).
    #[arg(long, short, conflicts_with = "backend", value_parser = NonEmptyStringValueParser::new())]
    adapter: Option<String>,
    /// Also compute the f64 reference, print the max absolute, relative and ULP error, and exit
    /// with code 3 when the documented bound is exceeded.
    #[arg(long)]
    verify: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendArg {
    Auto,
    Vulkan,
    Metal,
    Dx12,
    Gl,
    Software,
    Cpu,
    Reference,
}

/// A failure with its exit code.
struct Failure {
    message: String,
    code: u8,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        let code = match error {
            Error::File { .. } | Error::InvalidArgument(_) | Error::TooLarge(_) => EXIT_BAD_INPUT,
            _ => 1,
        };
        Failure {
            message: error.to_string(),
            code,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn,sigmax=info"))
        .format_target(false)
        .format_timestamp(None)
        .init();

    let result = match cli.command {
        Command::Sigmoid(args) => run_op(Job::Elementwise(Op::Sigmoid), &args, None),
        Command::LogSigmoid(args) => run_op(Job::Elementwise(Op::LogSigmoid), &args, None),
        Command::Silu(args) => run_op(Job::Elementwise(Op::Silu), &args, None),
        Command::Softmax(args) => {
            let job = Job::Softmax(args.distribution.options(args.log));
            run_op(job, &args.common, args.mask.as_deref())
        }
        Command::Entropy(args) => {
            let unit = if args.bits {
                EntropyUnit::Bits
            } else {
                EntropyUnit::Nats
            };
            let job = Job::Entropy(args.distribution.options(false), unit);
            run_op(job, &args.common, None)
        }
        Command::Adapters => {
            print_adapters();
            Ok(())
        }
        Command::Bench(args) => run_bench(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

fn open_backend(choice: BackendArg, adapter_text: Option<&str>) -> Result<Backend, Failure> {
    let adapter = match (adapter_text, choice) {
        // A number is an index; any other text, even a backend's name, is part of a name.
        (Some(text), _) => match text.parse() {
            Ok(index) => AdapterChoice::Index(index),
            Err(_) => AdapterChoice::Name(text.to_owned()),
        },
        (None, BackendArg::Cpu) => return Ok(Backend::cpu()?),
        (None, BackendArg::Reference) => return Ok(Backend::Reference),
        (None, BackendArg::Auto) => AdapterChoice::Auto,
        (None, BackendArg::Vulkan) => AdapterChoice::Vulkan,
        (None, BackendArg::Metal) => AdapterChoice::Metal,
        (None, BackendArg::Dx12) => AdapterChoice::Dx12,
        (None, BackendArg::Gl) => AdapterChoice::Gl,
        (None, BackendArg::Software) => AdapterChoice::Software,
    };
    let falls_back = adapter == AdapterChoice::Auto;
    let options = EngineOptions {
        adapter,
        ..Default::default()
    };
    match Engine::new(options) {
        Ok(engine) => Ok(Backend::Gpu(engine)),
        Err(error @ Error::NoAdapter { .. }) if falls_back => {
            log::warn!("{error}; running on the CPU");
            Ok(Backend::cpu()?)
        }
        Err(error) => Err(error.into()),
    }
}

fn compute(
    job: Job,
    backend: &Backend,
    input: &Array,
    mask: Option<&Array>,
) -> sigmax::Result<Vec<f32>> {
    match job {
        Job::Elementwise(op) => backend.elementwise(op, &input.data),
        Job::Softmax(options) => {
            let (rows, cols) = input.rows_cols();
            match mask {
                Some(mask) => backend.softmax_masked(&input.data, &mask.data, rows, cols, &options),
                None => backend.softmax_with(&input.data, rows, cols, &options),
            }
        }
        Job::Entropy(options, unit) => {
            let (rows, cols) = input.rows_cols();
            backend.entropy(&input.data, rows, cols, &options, unit)
        }
    }
}

/// Computes an elementwise op or softmax without a mask over `data`, in place.
fn compute_in_place(
    job: Job,
    backend: &Backend,
    data: &mut [f32],
    shape: &[usize],
) -> sigmax::Result<()> {
    let (rows, cols) = io::rows_cols(shape);
    match job {
        Job::Elementwise(op) => backend.elementwise_in_place(op, data),
        Job::Softmax(options) => backend.softmax_in_place(data, rows, cols, &options),
        Job::Entropy(..) => Err(Error::InvalidArgument(
            "the entropy writes one value per row, so it cannot run in place".to_owned(),
        )),
    }
}

fn run_op(job: Job, args: &OpArgs, mask_path: Option<&Path>) -> Result<(), Failure> {
    if let Job::Softmax(options) | Job::Entropy(options, _) = job {
        options.validate()?;
    }
    let op = job.op();
    io::check_output_folder(&args.output)?;
    let input = io::read_npy(&args.input)?;
    let mask = match mask_path {
        Some(path) => {
            let mask = io::read_npy(path)?;
            check_mask_shape(&input, &mask, path)?;
            Some(mask)
        }
        None => None,
    };
    let backend = match (args.backend, &args.adapter) {
        // Per call, the CPU backend or the best GPU, whichever is predicted faster.
        (BackendArg::Auto, None) => {
            let gpu = match open_backend(BackendArg::Auto, None)? {
                Backend::Gpu(engine) => Some(engine),
                _ => None,
            };
            Backend::Auto(Box::new(sigmax::auto::Auto::new(gpu)?))
        }
        _ => open_backend(args.backend, args.adapter.as_deref())?,
    };

    // Without --verify the input is not needed afterwards, so elementwise ops and softmax
    // without a mask overwrite it in place instead of filling a second array.
    let started = Instant::now();
    let in_place = !args.verify && mask.is_none() && !matches!(job, Job::Entropy(..));
    let shape = input.shape.clone();
    let (input, output) = if in_place {
        let mut data = input.data;
        compute_in_place(job, &backend, &mut data, &shape)?;
        (None, data)
    } else {
        let output = compute(job, &backend, &input, mask.as_ref())?;
        (Some(input), output)
    };
    log::info!(
        "{} of {} {:?} on {}: {:.1} ms",
        op.name(),
        args.input.display(),
        shape,
        backend.name(),
        started.elapsed().as_secs_f64() * 1e3
    );

    let result = Array {
        data: output,
        shape: job.output_shape(&shape),
    };
    io::write_npy(&args.output, &result)?;

    if let (true, Some(input)) = (args.verify, input) {
        verify_against_reference(job, &input, mask.as_ref(), &result, &args.input)?;
    }
    Ok(())
}

/// Checks that a mask has the input's shape or the shape of its last axis.
fn check_mask_shape(input: &Array, mask: &Array, path: &Path) -> Result<(), Failure> {
    let row_shape = &input.shape[input.shape.len().saturating_sub(1)..];
    if mask.shape == input.shape || mask.shape == row_shape {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "{}: mask shape {:?} fits neither the input's shape {:?} nor one row {:?}; give a \
         mask of one of those shapes",
        path.display(),
        mask.shape,
        input.shape,
        row_shape
    ))
    .into())
}

fn verify_against_reference(
    job: Job,
    input: &Array,
    mask: Option<&Array>,
    result: &Array,
    path: &Path,
) -> Result<(), Failure> {
    let output = &result.data[..];
    let expected = compute(job, &Backend::Reference, input, mask)?;
    let op = job.op();
    let bound = Bound::of(op);
    let stats = verify::compare(output, &expected, bound.tiny);
    let at = |index: usize| {
        format!(
            "at {} (got {:e}, expected {:e})",
            verify::format_index(index, &result.shape),
            output[index],
            expected[index]
        )
    };

    println!(
        "{} of {} {:?} against the f64 reference:",
        op.name(),
        path.display(),
        input.shape
    );
    if output.is_empty() {
        println!("  no elements");
        return Ok(());
    }
    println!(
        "  max abs error  {:.3e} {}",
        stats.max_abs,
        at(stats.max_abs_index)
    );
    // Relative and ULP errors skip references below the bound's floor, where adapters may
    // flush results to zero and the absolute rule applies.
    let floor = if bound.tiny > 0.0 {
        format!("over references of magnitude {:e} or more", bound.tiny)
    } else {
        "over all references".to_owned()
    };
    println!(
        "  max rel error  {:.3e} {} {floor}",
        stats.max_rel,
        at(stats.max_rel_index)
    );
    println!(
        "  max ULP error  {} {} {floor}",
        stats.max_ulp,
        at(stats.max_ulp_index)
    );
    if bound.ulp_floor > 0.0 {
        let (units, index) = bound.worst(output, &expected);
        println!(
            "  max error      {units:.2} ULP of max(|reference|, {}) {}",
            bound.ulp_floor,
            at(index)
        );
    }
    match bound.first_violation(output, &expected) {
        None => {
            println!("  bound          {bound}: met");
            Ok(())
        }
        Some(index) => Err(Failure {
            message: format!("result exceeds the bound of {bound} {}", at(index)),
            code: EXIT_VERIFY_FAILED,
        }),
    }
}

fn run_bench(args: &BenchArgs) -> Result<(), Failure> {
    if args.backend == BackendArg::Reference {
        return Err(Error::InvalidArgument(
            "the bench does not time the f64 reference; give --backend cpu to time the CPU \
             backend alone"
                .to_owned(),
        )
        .into());
    }
    let baseline = args
        .baseline
        .as_deref()
        .map(cli_bench::read_baseline)
        .transpose()?;
    let options = SoftmaxOptions {
        temperature: args.temperature,
        ..SoftmaxOptions::default()
    };
    options.validate()?;
    if let Some(path) = &args.json {
        io::check_output_folder(path)?;
    }
    let cases: Vec<(Op, Vec<usize>)> = if args.shape.is_empty() {
        cli_bench::DEFAULT_CASES
            .iter()
            .map(|(op, shape)| (*op, shape.to_vec()))
            .collect()
    } else {
        let ops = match args.op.as_slice() {
            [] => vec![Op::Sigmoid, Op::Softmax],
            ops => ops.iter().map(|op| op.op()).collect(),
        };
        let shapes = args.shape.iter();
        shapes
            .flat_map(|shape| ops.iter().map(|op| (*op, shape.clone())))
            .collect()
    };

    let gpu = match args.backend {
        BackendArg::Cpu | BackendArg::Reference if args.adapter.is_none() => None,
        _ => Some(open_backend(args.backend, args.adapter.as_deref())?),
    };
    let gpu = gpu.filter(|backend| matches!(backend, Backend::Gpu(_)));
    let measurements = cli_bench::run(
        gpu.as_ref(),
        true,
        &cases,
        args.temperature,
        args.runs as usize,
    )?;

    cli_bench::print_table(&measurements);
    if let Some(baseline) = &baseline {
        cli_bench::print_baseline(&measurements, baseline);
    }
    if let Some(path) = &args.json {
        cli_bench::write_json(path, &measurements)?;
    }
    Ok(())
}

fn print_adapters() {
    let adapters = sigmax::list_adapters();
    if adapters.is_empty() {
        eprintln!(
            "no adapters found; on Debian and Ubuntu, `apt-get install mesa-vulkan-drivers libvulkan1` \
             installs a software Vulkan driver"
        );
        return;
    }
    for (index, adapter) in adapters.iter().enumerate() {
        let info = &adapter.info;
        let limits = &adapter.limits;
        let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
        println!("{index}: {}", info.name);
        println!(
            "   backend {:?}, device type {:?}",
            info.backend, info.device_type
        );
        println!("   driver {}", sigmax::driver_description(info));
        println!(
            "   compute shaders {}, subgroup sizes {}..{}{}",
            if adapter.compute { "yes" } else { "no" },
            info.subgroup_min_size,
            info.subgroup_max_size,
            if adapter.features.contains(wgpu::Features::SUBGROUP) {
                " (SUBGROUP)"
            } else {
                ""
            },
        );
        println!(
            "   max storage binding {:.0} MiB, max buffer {:.0} MiB",
            mib(limits.max_storage_buffer_binding_size),
            mib(limits.max_buffer_size)
        );
        println!(
            "   workgroups per dimension {}, invocations per workgroup {}, workgroup memory {} KiB",
            limits.max_compute_workgroups_per_dimension,
            limits.max_compute_invocations_per_workgroup,
            limits.max_compute_workgroup_storage_size / 1024
        );
    }
}
