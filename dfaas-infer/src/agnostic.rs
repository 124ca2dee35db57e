//! The inputs of the topology-agnostic layout (`layout: agnostic`): one
//! row of [`ENTRY_WIDTH`] features per Dirichlet entry of an agent,
//! `[local, forward_1..k, reject]`, computed from the agent's own
//! observation only. One network scores every row (one output: the
//! entry's concentration before softplus), so a node with any number of
//! neighbours, in any order, gets an action: the rows of a forward entry
//! depend on that neighbour's features and on summaries of all of them
//! (count, sum, mean, max) that do not depend on their order.
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
//! Observations are whole request counts, so the sums are exact in f32
//! and the rows do not depend on the neighbours' order at all (only the
//! forward rows' own order, which is the action's).
//!
//! The trainer (`dfaas-policies`, layout `agnostic`) builds its rows with
//! [`entry_rows`] and its critic reads the local row, so inference and
//! training see the same numbers bit for bit.

use crate::error::ShapeError;

/// Features per entry row.
pub const ENTRY_WIDTH: usize = 16;

/// Neighbours of an agent whose observation has `len` values
/// (`2 + 2k`), if `len` is such a length.
#[must_use]
pub fn degree_of(len: usize) -> Option<usize> {
    (len >= 2 && len.is_multiple_of(2)).then(|| (len - 2) / 2)
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
    let k = degree_of(observation.len()).ok_or(ShapeError::Length {
        field: "observation",
        expected: 2 + 2 * (observation.len().saturating_sub(2) / 2),
        got: observation.len(),
    })?;
    if rows.len() != (2 + k) * ENTRY_WIDTH {
        return Err(ShapeError::Length {
            field: "rows",
            expected: (2 + k) * ENTRY_WIDTH,
            got: rows.len(),
        });
    }
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
    for (i, row) in rows.chunks_exact_mut(ENTRY_WIDTH).enumerate() {
        let (head, entry) = row.split_at_mut(context.len());
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
    Ok(())
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
}
