//! Getting a GPU: adapter and device, kept apart from the kernels so tests
//! and programs can share one.

use std::fmt;

/// Why no GPU work can be done.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum GpuError {
    /// Occurs when no adapter (no Vulkan driver, not even Mesa's lavapipe)
    /// exists on this machine.
    NoAdapter(String),
    /// Occurs when the adapter refuses to create a device.
    Device(String),
    /// Occurs when a buffer cannot be read back.
    Readback(String),
    /// Occurs when an input does not fit a kernel (sizes, value ranges).
    Input {
        /// The input.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl fmt::Display for GpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoAdapter(why) => write!(
                f,
                "no GPU adapter: {why} (install a Vulkan driver; `apt-get install mesa-vulkan-drivers libvulkan1` gives a software one)"
            ),
            Self::Device(why) => write!(f, "GPU device request failed: {why}"),
            Self::Readback(why) => write!(f, "GPU readback failed: {why}"),
            Self::Input { field, reason } => write!(f, "{field}: {reason}"),
        }
    }
}

impl std::error::Error for GpuError {}

/// A device and its queue, with the adapter's description.
#[derive(Debug)]
pub struct GpuContext {
    /// The device.
    pub device: wgpu::Device,
    /// Its queue.
    pub queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
}

impl GpuContext {
    /// The high-performance adapter of the Vulkan backend and a device with
    /// the adapter's own limits.
    ///
    /// # Errors
    /// [`GpuError::NoAdapter`] when there is none, [`GpuError::Device`] when
    /// the device cannot be created.
    pub fn new() -> Result<Self, GpuError> {
        pollster::block_on(Self::request())
    }

    async fn request() -> Result<Self, GpuError> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: wgpu::Backends::VULKAN,
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::NoAdapter(e.to_string()))?;
        let info = adapter.get_info();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("dfaas"),
                required_limits: adapter.limits(),
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::Device(e.to_string()))?;
        Ok(Self {
            device,
            queue,
            info,
        })
    }

    /// As [`GpuContext::new`], but `Ok(None)` (with a message on stderr) when
    /// this machine has no adapter at all — for tests and tools that may run
    /// without a GPU. With `DFAAS_REQUIRE_GPU=1` (set by CI, where lavapipe
    /// is installed) a missing adapter stays an error.
    ///
    /// # Errors
    /// As [`GpuContext::new`], except a missing adapter when not required.
    pub fn new_or_skip() -> Result<Option<Self>, GpuError> {
        match Self::new() {
            Ok(ctx) => Ok(Some(ctx)),
            Err(GpuError::NoAdapter(why))
                if std::env::var("DFAAS_REQUIRE_GPU").as_deref() != Ok("1") =>
            {
                eprintln!("skipping GPU work: no adapter ({why})");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Compiles `source` with the shared WGSL functions (`split.wgsl`)
    /// prepended, their private arrays sized for `max_entries` entries (a
    /// split row or an incoming list): the smaller, the less private memory
    /// per invocation on a real GPU.
    pub(crate) fn shader(
        &self,
        label: &str,
        source: &str,
        max_entries: usize,
    ) -> wgpu::ShaderModule {
        let shared = include_str!("split.wgsl").replace(
            "const MAX_ENTRIES: u32 = 64u;",
            &format!("const MAX_ENTRIES: u32 = {}u;", max_entries.clamp(1, 64)),
        );
        let full = format!("{shared}\n{source}");
        self.device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(full.into()),
            })
    }

    /// Copies `buffer` (with `COPY_SRC` usage) back to the host.
    ///
    /// # Errors
    /// [`GpuError::Readback`] if the copy or the map fails.
    pub(crate) fn read_buffer<T: bytemuck::Pod>(
        &self,
        buffer: &wgpu::Buffer,
    ) -> Result<Vec<T>, GpuError> {
        let size = buffer.size();
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("readback"),
            });
        encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, Some(size));
        let submission = self.queue.submit([encoder.finish()]);
        let slice = staging.slice(..);
        let (sender, receiver) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = sender.send(r);
        });
        let failed = |e: &dyn fmt::Display| GpuError::Readback(e.to_string());
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(submission),
                timeout: None,
            })
            .map_err(|e| failed(&e))?;
        receiver
            .recv()
            .map_err(|e| failed(&e))?
            .map_err(|e| failed(&e))?;
        let mapped = slice.get_mapped_range().map_err(|e| failed(&e))?;
        let values = bytemuck::cast_slice(&mapped).to_vec();
        drop(mapped);
        staging.unmap();
        Ok(values)
    }

    /// The adapter in use, e.g. `NVIDIA H100 (Vulkan, DiscreteGpu)`.
    #[must_use]
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?})",
            self.info.name, self.info.backend, self.info.device_type
        )
    }

    /// The adapter's details.
    #[must_use]
    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }
}
