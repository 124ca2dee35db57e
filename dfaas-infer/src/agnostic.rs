//! The inputs of the topology-agnostic layout (`layout: agnostic`): one
//! row of features per Dirichlet entry of an agent, `[local,
//! forward_1..k, reject]`. One network scores every row (one output: the
//! entry's concentration before softplus), so a node with any number of
//! neighbours, in any order, gets an action: the rows of a forward entry
//! depend on that neighbour's features and on summaries of all of them
//! (count, sum, mean, max) that do not depend on their order.
//!
//! Rows come in two kinds, fixed when the policy is trained:
//! * [`entry_rows`], [`ENTRY_WIDTH`] features from the agent's own
//!   observation only (what the reference's agents see);
//! * [`gossip_rows`], [`GOSSIP_ROW_WIDTH`] features: the same sixteen
//!   followed by [`GOSSIP_WIDTH`] from the node's own capacity and what
//!   its neighbours tell it by gossip — each one's previous input rate,
//!   capacity and degree ([`GOSSIP_PER_NEIGHBOUR`] values), what the
//!   platform's agents exchange and its Recalc and Node-Margin strategies
//!   read (`../shared/spec/PLATFORM_STRATEGIES.md`).
//!
//! A row is `[context | entry]`, in requests per step:
//!
//! | index | context (the same in every row of the agent) |
//! |---|---|
//! | 0, 1 | `input_rate`, `prev_input_rate` |
//! | 2 | `k`, the number of neighbours |
//! | 3, 4 | Σ `prev_forward_to_j`, Σ `prev_forward_rejects_to_j` |
//! | 5, 6 | their means over the neighbours (0 without neighbours) |
//! | 7, 8 | their maxima (0 without neighbours) |
//!
//! | index | entry |
//! |---|---|
//! | 9, 10, 11 | one-hot kind: local, forward, reject |
//! | 12, 13 | forward to `j`: `prev_forward_to_j`, `prev_forward_rejects_to_j` (0 otherwise) |
//! | 14 | forward to `j`: the requests it served, `forward − rejects` |
//! | 15 | forward to `j`: the reject share, `rejects / max(forward, 1)` |
//!
//! With gossip (`C` the node's capacity, `λ` its `input_rate`; for
//! neighbour `j` its previous input rate `λ_j`, capacity `C_j`, degree
//! `k_j` and spare capacity `s_j = max(C_j − λ_j, 0)`):
//!
//! | index | gossip context (every row) |
//! |---|---|
//! | 16, 17 | `C`, the usage `λ / max(C, 1)` |
//! | 18 | the excess `max(λ − C, 0)` |
//! | 19 | Σ `s_j` over the neighbours |
//!
//! | index | gossip entry (forward to `j`; 0 in the other rows) |
//! |---|---|
//! | 20, 21, 22 | `λ_j`, `C_j`, `k_j` |
//! | 23 | `s_j` |
//! | 24 | `s_j / max(k_j, 1)`, the share Recalc's neighbour would offer |
//! | 25 | `λ_j / max(C_j, 1)`, the neighbour's usage |
//!
//! Observations, capacities and degrees are whole numbers, so the sums are
//! exact in f32 and the rows do not depend on the neighbours' order at all
//! (only the forward rows' own order, which is the action's).
//!
//! The trainer (`dfaas-policies`, layout `agnostic`) builds its rows with
//! these functions and its critic reads the local row, so inference and
//! training see the same numbers bit for bit.

use crate::error::ShapeError;

/// Features per entry row of [`entry_rows`].
pub const ENTRY_WIDTH: usize = 16;

/// Features [`gossip_rows`] adds after the [`ENTRY_WIDTH`] own ones.
pub const GOSSIP_WIDTH: usize = 10;

/// Features per entry row of [`gossip_rows`].
pub const GOSSIP_ROW_WIDTH: usize = ENTRY_WIDTH + GOSSIP_WIDTH;

/// Gossip values per neighbour: `[prev_input_rate, capacity, degree]`.
pub const GOSSIP_PER_NEIGHBOUR: usize = 3;

/// Length of the gossip of a node with `k` neighbours: its own capacity,
/// then [`GOSSIP_PER_NEIGHBOUR`] values per neighbour.
#[must_use]
pub const fn gossip_len(k: usize) -> usize {
    1 + GOSSIP_PER_NEIGHBOUR * k
}

/// Neighbours of an agent whose observation has `len` values
/// (`2 + 2k`), if `len` is such a length.
#[must_use]
pub fn degree_of(len: usize) -> Option<usize> {
    (len >= 2 && len.is_multiple_of(2)).then(|| (len - 2) / 2)
}

/// The degree of `observation` and a check that `rows` holds `2 + k` rows
/// of `width`.
fn checked_degree(observation: &[f32], rows: &[f32], width: usize) -> Result<usize, ShapeError> {
    let k = degree_of(observation.len()).ok_or(ShapeError::Length {
        field: "observation",
        expected: 2 + 2 * (observation.len().saturating_sub(2) / 2),
        got: observation.len(),
    })?;
    if rows.len() != (2 + k) * width {
        return Err(ShapeError::Length {
            field: "rows",
            expected: (2 + k) * width,
            got: rows.len(),
        });
    }
    Ok(k)
}

/// Writes the `2 + k` entry rows (`[local, forward_1..k, reject]`, each
/// [`ENTRY_WIDTH`] wide) of an agent whose own observation is
/// `observation` (`[input_rate, prev_input_rate, prev_forward_to_1..k,
/// prev_forward_rejects_to_1..k]`, `2 + 2k` values) into `rows`.
///
/// # Errors
/// [`ShapeError::Length`] when `observation` has no `2 + 2k` length
/// (`field: "observation"`) or `rows` is not `(2 + k)·ENTRY_WIDTH` long
/// (`field: "rows"`); nothing is written then.
pub fn entry_rows(observation: &[f32], rows: &mut [f32]) -> Result<(), ShapeError> {
    let k = checked_degree(observation, rows, ENTRY_WIDTH)?;
    write_own(observation, k, rows, ENTRY_WIDTH);
    Ok(())
}

/// Writes the `2 + k` entry rows of [`GOSSIP_ROW_WIDTH`] of an agent with
/// its own `observation` (as [`entry_rows`]) and `gossip` (`[C, λ_1, C_1,
/// k_1, …, λ_k, C_k, k_k]`, [`gossip_len`]`(k)` values: its capacity, then
/// each neighbour's previous input rate, capacity and degree, in the order
/// of its forward entries) into `rows`.
///
/// # Errors
/// [`ShapeError::Length`] as [`entry_rows`] (rows of
/// [`GOSSIP_ROW_WIDTH`]), or when `gossip` is not `gossip_len(k)` long
/// (`field: "gossip"`); nothing is written then.
pub fn gossip_rows(
    observation: &[f32],
    gossip: &[f32],
    rows: &mut [f32],
) -> Result<(), ShapeError> {
    let k = checked_degree(observation, rows, GOSSIP_ROW_WIDTH)?;
    if gossip.len() != gossip_len(k) {
        return Err(ShapeError::Length {
            field: "gossip",
            expected: gossip_len(k),
            got: gossip.len(),
        });
    }
    write_own(observation, k, rows, GOSSIP_ROW_WIDTH);
    let (capacity, rate) = (gossip[0], observation[0]);
    let neighbours = gossip[1..].chunks_exact(GOSSIP_PER_NEIGHBOUR);
    let spare = |j: &[f32]| (j[1] - j[0]).max(0.0);
    let total_spare: f32 = neighbours.clone().map(spare).sum();
    let context = [
        capacity,
        rate / capacity.max(1.0),
        (rate - capacity).max(0.0),
        total_spare,
    ];
    for (i, row) in rows.chunks_exact_mut(GOSSIP_ROW_WIDTH).enumerate() {
        let (head, entry) = row[ENTRY_WIDTH..].split_at_mut(context.len());
        head.copy_from_slice(&context);
        entry.fill(0.0);
        if (1..=k).contains(&i) {
            let j = &gossip[1 + (i - 1) * GOSSIP_PER_NEIGHBOUR..][..GOSSIP_PER_NEIGHBOUR];
            let (rate_j, capacity_j, degree_j) = (j[0], j[1], j[2]);
            entry.copy_from_slice(&[
                rate_j,
                capacity_j,
                degree_j,
                spare(j),
                spare(j) / degree_j.max(1.0),
                rate_j / capacity_j.max(1.0),
            ]);
        }
    }
    Ok(())
}

/// The [`ENTRY_WIDTH`] own features at the start of each of the `2 + k`
/// rows of `width` (lengths checked by the caller).
fn write_own(observation: &[f32], k: usize, rows: &mut [f32], width: usize) {
    let (forwards, rejects) = observation[2..].split_at(k);
    let (mut sum_f, mut sum_r, mut max_f, mut max_r) = (0f32, 0f32, 0f32, 0f32);
    for (&f, &r) in forwards.iter().zip(rejects) {
        sum_f += f;
        sum_r += r;
        max_f = max_f.max(f);
        max_r = max_r.max(r);
    }
    let (mean_f, mean_r) = if k == 0 {
        (0.0, 0.0)
    } else {
        (sum_f / k as f32, sum_r / k as f32)
    };
    let context = [
        observation[0],
        observation[1],
        k as f32,
        sum_f,
        sum_r,
        mean_f,
        mean_r,
        max_f,
        max_r,
    ];
    for (i, row) in rows.chunks_exact_mut(width).enumerate() {
        let (head, entry) = row[..ENTRY_WIDTH].split_at_mut(context.len());
        head.copy_from_slice(&context);
        entry.fill(0.0);
        if i == 0 {
            entry[0] = 1.0;
        } else if i == k + 1 {
            entry[2] = 1.0;
        } else {
            let (f, r) = (forwards[i - 1], rejects[i - 1]);
            entry[1] = 1.0;
            entry[3] = f;
            entry[4] = r;
            entry[5] = f - r;
            entry[6] = r / f.max(1.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_two_neighbours_by_hand() {
        // input 10, previous 8; forwarded 3 (1 rejected) and 0 (0).
        let observation = [10.0, 8.0, 3.0, 0.0, 1.0, 0.0];
        let mut rows = [9f32; 4 * ENTRY_WIDTH];
        entry_rows(&observation, &mut rows).unwrap();
        let context = [10.0, 8.0, 2.0, 3.0, 1.0, 1.5, 0.5, 3.0, 1.0];
        let want: [[f32; 7]; 4] = [
            [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 3.0, 1.0, 2.0, 1.0 / 3.0],
            [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0],
        ];
        for (row, entry) in rows.chunks_exact(ENTRY_WIDTH).zip(want) {
            assert_eq!(&row[..9], &context);
            assert_eq!(&row[9..], &entry);
        }
    }

    #[test]
    fn no_neighbours_gives_local_and_reject_rows() {
        let mut rows = [0f32; 2 * ENTRY_WIDTH];
        entry_rows(&[4.0, 5.0], &mut rows).unwrap();
        assert_eq!(&rows[..9], &[4.0, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(rows[9], 1.0);
        assert_eq!(rows[ENTRY_WIDTH + 11], 1.0);
    }

    #[test]
    fn permuting_neighbours_permutes_their_rows_only() {
        let observation = [40.0, 38.0, 5.0, 9.0, 2.0, 1.0, 4.0, 0.0];
        let permuted = [40.0, 38.0, 2.0, 5.0, 9.0, 0.0, 1.0, 4.0];
        let (mut a, mut b) = ([0f32; 5 * ENTRY_WIDTH], [0f32; 5 * ENTRY_WIDTH]);
        entry_rows(&observation, &mut a).unwrap();
        entry_rows(&permuted, &mut b).unwrap();
        let row = |rows: &[f32], i: usize| rows[i * ENTRY_WIDTH..(i + 1) * ENTRY_WIDTH].to_vec();
        // New order (3, 1, 2) of the old forward rows 1..=3.
        for (new, old) in [(0, 0), (1, 3), (2, 1), (3, 2), (4, 4)] {
            assert_eq!(row(&b, new), row(&a, old), "row {new}");
        }
    }

    #[test]
    fn lengths_that_do_not_fit_are_errors() {
        let mut rows = [0f32; 3 * ENTRY_WIDTH];
        assert!(matches!(
            entry_rows(&[1.0, 2.0, 3.0], &mut rows),
            Err(ShapeError::Length {
                field: "observation",
                ..
            })
        ));
        assert!(matches!(
            entry_rows(&[1.0, 2.0], &mut rows),
            Err(ShapeError::Length { field: "rows", .. })
        ));
        assert_eq!(rows, [0f32; 3 * ENTRY_WIDTH]);
    }

    #[test]
    fn gossip_rows_of_two_neighbours_by_hand() {
        // Input 30 at capacity 22; neighbour 1 had 10 of capacity 22 and 2
        // neighbours, neighbour 2 had 25 of capacity 20 and 3 neighbours.
        let observation = [30.0, 28.0, 3.0, 0.0, 1.0, 0.0];
        let gossip = [22.0, 10.0, 22.0, 2.0, 25.0, 20.0, 3.0];
        let mut rows = [9f32; 4 * GOSSIP_ROW_WIDTH];
        gossip_rows(&observation, &gossip, &mut rows).unwrap();
        let mut own = [0f32; 4 * ENTRY_WIDTH];
        entry_rows(&observation, &mut own).unwrap();
        let context = [22.0, 30.0 / 22.0, 8.0, 12.0];
        let want: [[f32; 6]; 4] = [
            [0.0; 6],
            [10.0, 22.0, 2.0, 12.0, 6.0, 10.0 / 22.0],
            [25.0, 20.0, 3.0, 0.0, 0.0, 25.0 / 20.0],
            [0.0; 6],
        ];
        for ((row, own), entry) in rows
            .chunks_exact(GOSSIP_ROW_WIDTH)
            .zip(own.chunks_exact(ENTRY_WIDTH))
            .zip(want)
        {
            assert_eq!(&row[..ENTRY_WIDTH], own);
            assert_eq!(&row[16..20], &context);
            assert_eq!(&row[20..], &entry);
        }
    }

    #[test]
    fn gossip_rows_permute_with_the_neighbours() {
        let observation = [40.0, 38.0, 5.0, 9.0, 2.0, 1.0, 4.0, 0.0];
        let gossip = [20.0, 7.0, 22.0, 2.0, 30.0, 25.0, 4.0, 1.0, 9.0, 1.0];
        let permuted_obs = [40.0, 38.0, 2.0, 5.0, 9.0, 0.0, 1.0, 4.0];
        let permuted_gossip = [20.0, 1.0, 9.0, 1.0, 7.0, 22.0, 2.0, 30.0, 25.0, 4.0];
        let (mut a, mut b) = ([0f32; 5 * GOSSIP_ROW_WIDTH], [0f32; 5 * GOSSIP_ROW_WIDTH]);
        gossip_rows(&observation, &gossip, &mut a).unwrap();
        gossip_rows(&permuted_obs, &permuted_gossip, &mut b).unwrap();
        let row =
            |rows: &[f32], i: usize| rows[i * GOSSIP_ROW_WIDTH..][..GOSSIP_ROW_WIDTH].to_vec();
        for (new, old) in [(0, 0), (1, 3), (2, 1), (3, 2), (4, 4)] {
            assert_eq!(row(&b, new), row(&a, old), "row {new}");
        }
    }

    #[test]
    fn gossip_that_does_not_fit_is_an_error() {
        let mut rows = [7f32; 3 * GOSSIP_ROW_WIDTH];
        assert!(matches!(
            gossip_rows(&[1.0, 2.0, 3.0, 0.0], &[4.0, 1.0, 2.0], &mut rows),
            Err(ShapeError::Length {
                field: "gossip",
                expected: 4,
                got: 3
            })
        ));
        assert!(matches!(
            gossip_rows(&[1.0, 2.0, 3.0, 0.0], &[4.0, 1.0, 2.0, 1.0], &mut rows[1..]),
            Err(ShapeError::Length { field: "rows", .. })
        ));
        assert_eq!(rows, [7f32; 3 * GOSSIP_ROW_WIDTH]);
    }
}
