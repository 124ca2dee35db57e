//! `Policy::act` and `Policy::act_explore` allocate nothing after loading:
//! a counting global allocator sees no allocation on this thread during
//! thousands of calls, in the independent and the shared layout; nor does
//! `Policy::act_node` of an agnostic policy, with gossip or without.

mod common;

use dfaas_infer::{Policy, explore_stream};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Counts the allocations of threads that switched counting on.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; the
// counters are const-initialised thread locals (no allocation).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|c| c.set(c.get() + 1));
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|c| c.set(c.get() + 1));
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|c| c.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn acting_allocates_nothing() {
    // The counter itself works.
    assert!(allocations(|| drop(std::hint::black_box(vec![1u8; 10]))) >= 1);
    for layout in ["independent", "shared"] {
        let meta = common::metadata(layout, common::TOPOLOGY);
        let mut policy = Policy::from_safetensors(&common::checkpoint(&meta)).unwrap();
        let mut observation = [0f32; 8];
        let mut action = [0f32; 5];
        let mut values = common::Values::new(3);
        let mut sum = 0f32;
        let count = allocations(|| {
            for i in 0..4000u64 {
                let agent = (i % 4) as usize;
                let k = policy.agents()[agent].degree();
                for v in &mut observation[..2 + 2 * k] {
                    *v = 100.0 * (values.next() + 1.0);
                }
                let (obs, act) = (&observation[..2 + 2 * k], &mut action[..2 + k]);
                if i % 2 == 0 {
                    policy.act(agent, obs, act).unwrap();
                } else {
                    let mut rng = explore_stream(42, i);
                    policy.act_explore(agent, obs, &mut rng, act).unwrap();
                }
                sum += act.iter().sum::<f32>();
                // Errors allocate nothing either.
                assert!(policy.act(agent, &obs[1..], act).is_err());
            }
        });
        assert_eq!(count, 0, "{layout}: {count} allocations");
        assert!((sum / 4000.0 - 1.0).abs() < 1e-5, "{layout}: {sum}");
    }
}

#[test]
fn acting_for_any_node_allocates_nothing() {
    for gossip in [false, true] {
        let mut meta = common::metadata("agnostic", common::TOPOLOGY);
        meta.gossip = gossip;
        let mut policy = Policy::from_safetensors(&common::checkpoint(&meta)).unwrap();
        let mut observation = [0f32; 2 + 2 * 62];
        let mut told = [0f32; 1 + 3 * 62];
        let mut action = [0f32; 64];
        let mut values = common::Values::new(5);
        let mut sum = 0f32;
        let count = allocations(|| {
            for i in 0..2000u64 {
                let k = (i % 63) as usize;
                for v in observation[..2 + 2 * k]
                    .iter_mut()
                    .chain(&mut told[..1 + 3 * k])
                {
                    *v = 100.0 * (values.next() + 1.0);
                }
                let obs = &observation[..2 + 2 * k];
                let g = gossip.then_some(&told[..1 + 3 * k]);
                let act = &mut action[..2 + k];
                if i % 2 == 0 {
                    policy.act_node(obs, g, act).unwrap();
                } else {
                    let mut rng = explore_stream(42, i);
                    policy.act_node_explore(obs, g, &mut rng, act).unwrap();
                }
                sum += act.iter().sum::<f32>();
                // Errors allocate nothing either.
                let wrong = (!gossip).then_some(&told[..1 + 3 * k]);
                assert!(policy.act_node(obs, wrong, act).is_err());
            }
        });
        assert_eq!(count, 0, "gossip {gossip}: {count} allocations");
        assert!((sum / 2000.0 - 1.0).abs() < 1e-5, "gossip {gossip}: {sum}");
    }
}
