//! The wasmtime engine every service of a gateway shares: compiled once per
//! component (and cached on disk by digest), prepared once per service,
//! instantiated from a pool.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::ServiceError;
use crate::host::{HostState, ServicePre};
use crate::manifest::MAX_MEMORY_MIB;

/// The epoch ticks this often; CPU deadlines are checked at each tick.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Service instances that can exist at once (a restart frees its slot
/// before taking a new one).
pub const INSTANCE_SLOTS: u32 = 256;
/// Core module instances one component may hold. A Rust or C component is
/// its program plus a few adapter and shim modules; a Python one
/// (componentize-py) links CPython, libc and their shims as ~40 modules.
pub const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 64;
pub const MAX_MEMORIES_PER_COMPONENT: u32 = 4;
pub const MAX_TABLES_PER_COMPONENT: u32 = 8;

pub(crate) struct Runtime {
    pub engine: Engine,
    linker: Linker<HostState>,
    cache_dir: Option<PathBuf>,
    ticker: Option<JoinHandle<()>>,
    stop_ticker: Arc<AtomicBool>,
    /// Components compiled or loaded from the cache so far.
    pub compilations: AtomicU64,
}

impl Runtime {
    /// `cache_dir` keeps compiled components across restarts; `None`
    /// compiles every time.
    pub fn new(cache_dir: Option<&Path>) -> Result<Self, ServiceError> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(INSTANCE_SLOTS)
            .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT)
            .total_core_instances(INSTANCE_SLOTS * 8)
            .max_memories_per_component(MAX_MEMORIES_PER_COMPONENT)
            .total_memories(INSTANCE_SLOTS * 2)
            .max_tables_per_component(MAX_TABLES_PER_COMPONENT)
            .total_tables(INSTANCE_SLOTS * 4)
            .max_memory_size((MAX_MEMORY_MIB << 20) as usize)
            // Linear memory is reset by madvise, keep a few slots warm.
            .max_unused_warm_slots(16);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(ServiceError::engine)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(ServiceError::engine)?;
        crate::host::Service::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |state| state,
        )
        .map_err(ServiceError::engine)?;

        let stop_ticker = Arc::new(AtomicBool::new(false));
        let ticker = {
            let engine = engine.clone();
            let stop = stop_ticker.clone();
            std::thread::Builder::new()
                .name("fogbank-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| ServiceError::Engine(format!("cannot start the epoch ticker: {e}")))?
        };
        if let Some(dir) = cache_dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                ServiceError::Engine(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        Ok(Runtime {
            engine,
            linker,
            cache_dir: cache_dir.map(Path::to_owned),
            ticker: Some(ticker),
            stop_ticker,
            compilations: AtomicU64::new(0),
        })
    }

    /// Compiles a component, or loads what an earlier compilation of the
    /// same bytes left in the cache.
    pub fn compile(&self, bytes: &[u8]) -> Result<Component, ServiceError> {
        self.compilations.fetch_add(1, Ordering::Relaxed);
        let digest = digest(bytes);
        let cached = self
            .cache_dir
            .as_ref()
            .map(|dir| dir.join(format!("{}.cwasm", &digest[7..])));
        if let Some(path) = &cached
            && path.exists()
        {
            // SAFETY: the cache directory holds only what `serialize` below
            // wrote, named by the digest of its source; wasmtime refuses
            // artifacts of another engine configuration or version, and
            // then the component is compiled again.
            match unsafe { Component::deserialize_file(&self.engine, path) } {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::info!(path = %path.display(), "recompiling a stale cached component: {e}")
                }
            }
        }
        let compiled = Component::new(&self.engine, bytes);
        give_back_memory();
        let component = compiled.map_err(|e| {
            let cause = root_cause(&e);
            // The pool checks a component's shape when it is compiled: a
            // valid component that needs more than a slot holds.
            if cause.contains("in the pooling allocator") {
                ServiceError::Invalid(format!(
                    "the component is too large for this gateway's instance pool \
                     (at most {MAX_CORE_INSTANCES_PER_COMPONENT} core module instances, \
                     {MAX_MEMORIES_PER_COMPONENT} memories and {MAX_TABLES_PER_COMPONENT} tables a component): {cause}"
                ))
            } else {
                ServiceError::Invalid(format!("not a WebAssembly component: {cause}"))
            }
        })?;
        if let Some(path) = &cached {
            let written = component
                .serialize()
                .map_err(|e| e.to_string())
                .and_then(|artifact| {
                    let partial = path.with_extension("partial");
                    std::fs::write(&partial, artifact)
                        .and_then(|()| std::fs::rename(&partial, path))
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = written {
                tracing::warn!(path = %path.display(), "cannot cache a compiled component: {e}");
            }
        }
        Ok(component)
    }

    /// Links a component against the `fogbank:service` world: every import
    /// must be one the host provides, every export must be there with its
    /// type. Done once per service; instantiation then only fills a slot.
    pub fn prepare(&self, component: &Component) -> Result<ServicePre<HostState>, ServiceError> {
        let pre = self.linker.instantiate_pre(component).map_err(|e| {
            ServiceError::Invalid(format!(
                "the component does not fit the fogbank:service world: {}",
                root_cause(&e)
            ))
        })?;
        ServicePre::new(pre).map_err(|e| {
            ServiceError::Invalid(format!(
                "the component does not export the fogbank:service world: {}",
                root_cause(&e)
            ))
        })
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
    }
}

/// Returns the heap that compiling freed to the system. Cranelift's
/// working memory for a CPython-sized component is some 300 MB, freed when
/// it is done; glibc's allocator would keep it mapped for the gateway's
/// whole life.
fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator's own
    // arenas; it touches no memory in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The linear memory a component's core modules define, at their initial
/// sizes: what an instance takes before its first instruction, so what a
/// manifest's `memory-mib` must at least allow. `None` if the bytes do not
/// parse (compiling them then says why).
pub(crate) fn initial_memory_bytes(component: &[u8]) -> Option<u64> {
    use wasmtime::wasmparser::{Parser, Payload};
    let mut total = 0u64;
    // parse_all walks into nested modules and components too.
    for payload in Parser::new(0).parse_all(component) {
        if let Payload::MemorySection(memories) = payload.ok()? {
            for memory in memories {
                let memory = memory.ok()?;
                let page = 1u64 << memory.page_size_log2.unwrap_or(16);
                total = total.saturating_add(memory.initial.saturating_mul(page));
            }
        }
    }
    Some(total)
}

/// `sha256:<hex>` of a component's bytes: the name it is replicated under.
pub use fogbank_taas::replicated::digest;

/// The full chain of a wasmtime error, which keeps the useful part (the
/// missing import's name) in its causes.
pub(crate) fn root_cause(error: &wasmtime::Error) -> String {
    format!("{error:#}")
}
