//! The GPU engine: instance, adapter choice, device, pipeline cache and buffer pool, with every
//! wgpu error caught in an error scope and returned as an [`Error`].

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::kernels;
use crate::planner::DeviceCaps;
use crate::pool::BufferPool;
use crate::shaders::{Reduction, ShaderFamily};

/// Adapter selection for an [`Engine`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AdapterChoice {
    /// The best Vulkan, Metal or DX12 adapter: a discrete GPU, then an integrated one, then a
    /// virtual one, then a software adapter. GL adapters are considered only when none of
    /// those exists, because wgpu's GL backend lacks subgroups and runs compute slower, and
    /// probing it makes EGL print errors on headless machines.
    #[default]
    Auto,
    /// The best Vulkan adapter.
    Vulkan,
    /// The best Metal adapter.
    Metal,
    /// The best DX12 adapter.
    Dx12,
    /// The best OpenGL or OpenGL ES adapter.
    Gl,
    /// The fallback (software) adapter, such as lavapipe or WARP.
    Software,
    /// The best adapter whose name contains this text, ignoring case.
    Name(String),
    /// The adapter at this position in [`list_adapters`], as `sigmax adapters` numbers them.
    Index(usize),
}

impl AdapterChoice {
    fn backends(&self) -> wgpu::Backends {
        match self {
            AdapterChoice::Vulkan => wgpu::Backends::VULKAN,
            AdapterChoice::Metal => wgpu::Backends::METAL,
            AdapterChoice::Dx12 => wgpu::Backends::DX12,
            AdapterChoice::Gl => wgpu::Backends::GL,
            AdapterChoice::Auto => wgpu::Backends::PRIMARY,
            AdapterChoice::Software | AdapterChoice::Name(_) | AdapterChoice::Index(_) => {
                wgpu::Backends::all()
            }
        }
    }
}

impl FromStr for AdapterChoice {
    type Err = std::convert::Infallible;

    /// Parses `auto`, `vulkan`, `metal`, `dx12`, `gl` or `software`, or a number as an index
    /// into [`list_adapters`]; any other text selects adapters by name.
    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        Ok(match text.to_ascii_lowercase().as_str() {
            "auto" => AdapterChoice::Auto,
            "vulkan" => AdapterChoice::Vulkan,
            "metal" => AdapterChoice::Metal,
            "dx12" => AdapterChoice::Dx12,
            "gl" => AdapterChoice::Gl,
            "software" => AdapterChoice::Software,
            _ => match text.parse() {
                Ok(index) => AdapterChoice::Index(index),
                Err(_) => AdapterChoice::Name(text.to_owned()),
            },
        })
    }
}

impl fmt::Display for AdapterChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdapterChoice::Auto => f.write_str("auto"),
            AdapterChoice::Vulkan => f.write_str("vulkan"),
            AdapterChoice::Metal => f.write_str("metal"),
            AdapterChoice::Dx12 => f.write_str("dx12"),
            AdapterChoice::Gl => f.write_str("gl"),
            AdapterChoice::Software => f.write_str("software"),
            AdapterChoice::Name(name) => f.write_str(name),
            AdapterChoice::Index(index) => write!(f, "adapter {index}"),
        }
    }
}

/// Options of [`Engine::new`].
#[derive(Clone, Debug, Default)]
pub struct EngineOptions {
    /// The adapter to run on.
    pub adapter: AdapterChoice,
    /// Caps the storage binding size, in bytes, below the adapter's limit: the device is
    /// created with this limit, and plans keep to it. Tests use it to exercise chunking on
    /// adapters with large bindings.
    pub max_storage_binding_bytes: Option<u64>,
    /// Caps the workgroups per dispatch dimension that plans use, below the device's limit.
    /// Tests use it to exercise folded grids on small inputs.
    pub max_workgroups_per_dimension: Option<u32>,
}

/// Description of one adapter, as `sigmax adapters` prints it.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    /// Name, backend, device type, driver and subgroup sizes.
    pub info: wgpu::AdapterInfo,
    /// The adapter's limits.
    pub limits: wgpu::Limits,
    /// The adapter's features.
    pub features: wgpu::Features,
    /// Whether the adapter runs compute shaders, which sigmax needs.
    pub compute: bool,
}

/// Features that kernels use when the adapter has them.
const OPTIONAL_FEATURES: wgpu::Features =
    wgpu::Features::SUBGROUP.union(wgpu::Features::SHADER_F16);

fn new_instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut descriptor = wgpu::InstanceDescriptor::new_without_display_handle();
    descriptor.backends = backends;
    wgpu::Instance::new(descriptor)
}

fn has_compute(adapter: &wgpu::Adapter) -> bool {
    adapter
        .get_downlevel_capabilities()
        .flags
        .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
}

/// Ranks adapters for `auto`: lower is better.
fn adapter_rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let device_rank = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    };
    let backend_rank = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        wgpu::Backend::Gl => 1,
        _ => 2,
    };
    (device_rank, backend_rank)
}

/// Returns the driver's name and version, such as `llvmpipe (Mesa 22.3.6)`; GL adapters
/// report only a version.
pub fn driver_description(info: &wgpu::AdapterInfo) -> String {
    match (info.driver.as_str(), info.driver_info.as_str()) {
        ("", version) => version.to_owned(),
        (driver, "") => driver.to_owned(),
        (driver, version) => format!("{driver} ({version})"),
    }
}

/// Lists every adapter of every backend compiled into wgpu.
pub async fn list_adapters_async() -> Vec<AdapterSummary> {
    let instance = new_instance(wgpu::Backends::all());
    let adapters = instance.enumerate_adapters(wgpu::Backends::all()).await;
    adapters
        .iter()
        .map(|adapter| AdapterSummary {
            info: adapter.get_info(),
            limits: adapter.limits(),
            features: adapter.features(),
            compute: has_compute(adapter),
        })
        .collect()
}

/// Lists every adapter of every backend compiled into wgpu, blocking.
pub fn list_adapters() -> Vec<AdapterSummary> {
    pollster::block_on(list_adapters_async())
}

async fn choose_adapter(choice: &AdapterChoice) -> Result<wgpu::Adapter> {
    let instance = new_instance(choice.backends());

    if *choice == AdapterChoice::Software {
        let options = wgpu::RequestAdapterOptions {
            force_fallback_adapter: true,
            ..Default::default()
        };
        let adapter = instance.request_adapter(&options).await.ok();
        return adapter
            .filter(has_compute)
            .ok_or_else(|| no_adapter(choice));
    }

    if let AdapterChoice::Index(index) = *choice {
        // The same enumeration as list_adapters, so that indices match.
        let adapter = instance
            .enumerate_adapters(wgpu::Backends::all())
            .await
            .into_iter()
            .nth(index);
        return adapter
            .filter(has_compute)
            .ok_or_else(|| no_adapter(choice));
    }

    let mut adapters = compute_adapters(&instance, choice.backends()).await;
    if *choice == AdapterChoice::Auto && adapters.is_empty() {
        adapters = compute_adapters(&new_instance(wgpu::Backends::GL), wgpu::Backends::GL).await;
    }
    if let AdapterChoice::Name(name) = choice {
        let name = name.to_lowercase();
        adapters.retain(|adapter| adapter.get_info().name.to_lowercase().contains(&name));
    }
    adapters.sort_by_key(|adapter| adapter_rank(&adapter.get_info()));
    adapters
        .into_iter()
        .next()
        .ok_or_else(|| no_adapter(choice))
}

async fn compute_adapters(
    instance: &wgpu::Instance,
    backends: wgpu::Backends,
) -> Vec<wgpu::Adapter> {
    let adapters = instance.enumerate_adapters(backends).await;
    adapters.into_iter().filter(has_compute).collect()
}

fn no_adapter(choice: &AdapterChoice) -> Error {
    let wants_vulkan = matches!(
        choice,
        AdapterChoice::Auto | AdapterChoice::Vulkan | AdapterChoice::Software
    );
    let hint = match choice {
        AdapterChoice::Index(_) => "; `sigmax adapters` lists the adapters with their numbers",
        _ if wants_vulkan && cfg!(target_os = "linux") => {
            "; install a Vulkan driver (on Debian and Ubuntu, the software driver comes with \
             `apt-get install mesa-vulkan-drivers libvulkan1`), or run `sigmax adapters` to see what is found"
        }
        _ => "; run `sigmax adapters` to see what is found",
    };
    Error::NoAdapter {
        choice: choice.to_string(),
        hint: hint.to_owned(),
    }
}

/// Compiled pipelines of one kernel family, sharing one bind group layout.
struct FamilyPipelines {
    layout: wgpu::BindGroupLayout,
    pipeline_layout: wgpu::PipelineLayout,
    module: wgpu::ShaderModule,
    by_entry_point: HashMap<PipelineKey, wgpu::ComputePipeline>,
}

/// An entry point with its pipeline constants (WGSL overrides), each value as f64 bits.
type PipelineKey = (&'static str, Vec<(&'static str, u64)>);

/// A wgpu device with the kernels' pipelines, built once and cached, and a buffer pool.
///
/// Every call returns wgpu's validation and out-of-memory errors as [`Error`] values. An
/// `Engine` is `Send + Sync`; calls from several threads share one queue.
pub struct Engine {
    info: wgpu::AdapterInfo,
    device: wgpu::Device,
    queue: wgpu::Queue,
    caps: DeviceCaps,
    pipelines: Mutex<HashMap<(ShaderFamily, Reduction), FamilyPipelines>>,
    pub(crate) pool: BufferPool,
    /// Serialises calls on GL devices. wgpu's GL backend panics when a thread waits more than
    /// a second for the GL context that another thread holds, as a long poll does (wgpu 30).
    gl_context: Option<parking_lot::ReentrantMutex<()>>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("adapter", &self.info.name)
            .field("backend", &self.info.backend)
            .field("caps", &self.caps)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Chooses an adapter and creates a device on it, blocking until done.
    pub fn new(options: EngineOptions) -> Result<Self> {
        pollster::block_on(Self::new_async(options))
    }

    /// Chooses an adapter and creates a device on it.
    ///
    /// The device gets every limit the adapter offers (wgpu's defaults would cap a buffer at
    /// 256 MiB and a workgroup at 256 invocations), and the SUBGROUP, SHADER_F16 and timestamp
    /// query features where the adapter has them.
    pub async fn new_async(options: EngineOptions) -> Result<Self> {
        let adapter = choose_adapter(&options.adapter).await?;
        let info = adapter.get_info();
        log::info!(
            "using adapter `{}` ({:?}, {:?}, driver {})",
            info.name,
            info.backend,
            info.device_type,
            driver_description(&info)
        );

        // A cap on the binding size applies to the device as well, so that a binding past it
        // is a validation error, as on a device whose limit it is.
        let mut limits = adapter.limits();
        if let Some(max) = options.max_storage_binding_bytes {
            limits.max_storage_buffer_binding_size =
                limits.max_storage_buffer_binding_size.min(max);
        }
        let descriptor = wgpu::DeviceDescriptor {
            label: Some("sigmax device"),
            required_features: adapter.features() & OPTIONAL_FEATURES,
            required_limits: limits,
            ..Default::default()
        };
        let (device, queue) = adapter
            .request_device(&descriptor)
            .await
            .map_err(|source| Error::RequestDevice {
                adapter: info.name.clone(),
                source,
            })?;

        // Errors outside sigmax's error scopes, from work an embedder records on this device,
        // are logged instead of panicking.
        device.on_uncaptured_error(Arc::new(|error: wgpu::Error| {
            log::error!("uncaptured wgpu error: {error}");
        }));

        let mut engine = Self::from_device(device, queue, info);
        if let Some(max) = options.max_storage_binding_bytes {
            engine.caps.max_storage_binding_bytes = engine.caps.max_storage_binding_bytes.min(max);
        }
        if let Some(max) = options.max_workgroups_per_dimension {
            let caps = &mut engine.caps;
            caps.max_workgroups_per_dimension = caps.max_workgroups_per_dimension.min(max);
        }
        Ok(engine)
    }

    /// Wraps a device that the caller created. Kernels use only the device's limits; the caller
    /// keeps its own uncaptured-error handler.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue, info: wgpu::AdapterInfo) -> Self {
        let caps = DeviceCaps::new(&device.limits(), device.features(), info.device_type);
        let gl_context =
            (info.backend == wgpu::Backend::Gl).then(|| parking_lot::ReentrantMutex::new(()));
        Engine {
            gl_context,
            info,
            device,
            queue,
            caps,
            pipelines: Mutex::new(HashMap::new()),
            pool: BufferPool::default(),
        }
    }

    /// The adapter's name, backend, device type and driver.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// The device, for embedders that record their own work next to sigmax's.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// The limits that plans use.
    pub fn caps(&self) -> &DeviceCaps {
        &self.caps
    }

    /// Locks the mutex that serialises every sigmax call on a GL engine, and returns `None` on
    /// other backends. The lock is reentrant.
    ///
    /// wgpu 30's GL backend panics when one thread waits more than a second for the GL context
    /// while another thread holds it, as a long poll does. Embedders that call wgpu on a GL
    /// engine's device from several threads should hold this guard around those calls.
    pub fn lock_gl_context(&self) -> Option<parking_lot::ReentrantMutexGuard<'_, ()>> {
        self.gl_context.as_ref().map(|mutex| mutex.lock())
    }

    /// Drops the pooled buffers that no call is using, so that wgpu frees their memory.
    pub fn release_pooled_buffers(&self) {
        self.pool.clear();
    }

    /// Runs `work` inside validation, out-of-memory and internal error scopes and returns the
    /// first error they caught. `operation` names the work in the error.
    pub(crate) fn scoped<T>(&self, operation: &str, work: impl FnOnce() -> Result<T>) -> Result<T> {
        let _gl_context = self.lock_gl_context();
        let out_of_memory = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);

        let result = work();

        // Scopes pop in reverse order of their pushes.
        let errors = [
            pollster::block_on(validation.pop()),
            pollster::block_on(internal.pop()),
            pollster::block_on(out_of_memory.pop()),
        ];
        if let Some(error) = errors.into_iter().flatten().next() {
            let error = Error::from_wgpu(operation, error);
            log::error!("{error}");
            return Err(error);
        }
        result
    }

    /// Returns the cached pipeline of `entry_point` in `family`, built with `reduction` and the
    /// pipeline `constants`, with its bind group layout, compiling the shader module and the
    /// pipeline on first use.
    pub(crate) fn pipeline(
        &self,
        family: ShaderFamily,
        reduction: Reduction,
        entry_point: &'static str,
        constants: &[(&'static str, f64)],
    ) -> Result<(wgpu::ComputePipeline, wgpu::BindGroupLayout)> {
        // Families that do not reduce compile one module whatever the plan's reduction.
        let reduction = if family.reduces() {
            reduction
        } else {
            Reduction::Workgroup
        };
        let mut cache = self
            .pipelines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let pipelines = match cache.entry((family, reduction)) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let operation = format!(
                    "compiling {} with {:?} reductions",
                    family.file_name(),
                    reduction
                );
                entry
                    .insert(self.scoped(&operation, || Ok(self.compile_family(family, reduction)))?)
            }
        };

        let key: PipelineKey = (
            entry_point,
            constants
                .iter()
                .map(|&(name, value)| (name, value.to_bits()))
                .collect(),
        );
        if !pipelines.by_entry_point.contains_key(&key) {
            let operation = format!(
                "creating pipeline `{entry_point}` of {} with constants {constants:?}",
                family.file_name()
            );
            let pipeline = self.scoped(&operation, || {
                Ok(self
                    .device
                    .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                        label: Some(entry_point),
                        layout: Some(&pipelines.pipeline_layout),
                        module: &pipelines.module,
                        entry_point: Some(entry_point),
                        compilation_options: wgpu::PipelineCompilationOptions {
                            constants,
                            ..Default::default()
                        },
                        cache: None,
                    }))
            })?;
            log::debug!(
                "compiled pipeline `{entry_point}` of {} with constants {constants:?}",
                family.file_name()
            );
            pipelines.by_entry_point.insert(key.clone(), pipeline);
        }
        Ok((
            pipelines.by_entry_point[&key].clone(),
            pipelines.layout.clone(),
        ))
    }

    fn compile_family(&self, family: ShaderFamily, reduction: Reduction) -> FamilyPipelines {
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(family.file_name()),
                source: wgpu::ShaderSource::Wgsl(family.source(reduction).into()),
            });
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(family.file_name()),
                entries: &kernels::layout_entries(family),
            });
        let pipeline_layout = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(family.file_name()),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
        FamilyPipelines {
            layout,
            pipeline_layout,
            module,
            by_entry_point: HashMap::new(),
        }
    }
}
