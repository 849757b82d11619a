//! Train / val / test splits for a folder of images (`medvae-fast data split`): the CSV a data
//! config names, written from the files instead of by hand.
//!
//! Files are split by *group*, never one by one: in medical imaging the slices or scans of one
//! patient are alike, and a patient in both train and test makes the test score optimistic.
//! The group of a file is the first `depth` folders of its path below the root (a BIDS
//! `sub-01/anat/t1.nii.gz` with depth 1: `sub-01`); depth 0, or a file with fewer folders, is
//! its own group.
//!
//! The groups are shuffled with a seeded ChaCha8 stream (whose output is fixed by its
//! specification, so a seed gives the same split on every machine and crate version) and dealt
//! to test, then val, until each holds its share of the files, the rest to train. Every split
//! asked for gets at least one group while train keeps one.

use rand::RngCore;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::Split;

/// How to split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitPlan {
    /// Share of the files for validation, in [0, 1).
    pub val: f64,
    /// Share of the files for testing, in [0, 1).
    pub test: f64,
    pub seed: u64,
    /// Folders of the relative path that name a file's group (0: every file alone).
    pub depth: usize,
}

/// The group of `relative` (a `/`-separated path below the root) at `depth` folders.
pub fn group_of(relative: &str, depth: usize) -> String {
    let folders: Vec<&str> = relative.split('/').collect();
    let folders = &folders[..folders.len() - 1];
    if depth == 0 || folders.len() < depth {
        relative.to_string()
    } else {
        folders[..depth].join("/")
    }
}

/// The split of each file of `relative` (same order), and the number of groups.
pub fn assign_splits(relative: &[String], plan: SplitPlan) -> Result<(Vec<Split>, usize), String> {
    let shares_ok = |x: f64| (0.0..1.0).contains(&x);
    if !shares_ok(plan.val) || !shares_ok(plan.test) || plan.val + plan.test >= 1.0 {
        return Err(format!(
            "val {} and test {} must be shares in [0, 1) that leave some files for train",
            plan.val, plan.test
        ));
    }
    // Groups in first-seen order (the caller's order is sorted, so this is deterministic).
    let mut names: Vec<String> = Vec::new();
    let mut index = std::collections::HashMap::new();
    let mut group_of_file = Vec::with_capacity(relative.len());
    let mut sizes: Vec<usize> = Vec::new();
    for r in relative {
        let g = group_of(r, plan.depth);
        let i = *index.entry(g.clone()).or_insert_with(|| {
            names.push(g);
            sizes.push(0);
            names.len() - 1
        });
        sizes[i] += 1;
        group_of_file.push(i);
    }
    let mut order: Vec<usize> = (0..names.len()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(plan.seed);
    for i in (1..order.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    let total = relative.len() as f64;
    let mut split_of_group = vec![Split::Train; names.len()];
    let mut next = order.into_iter().peekable();
    let mut left = names.len();
    for (split, share) in [(Split::Test, plan.test), (Split::Val, plan.val)] {
        if share == 0.0 {
            continue;
        }
        let target = (share * total).round().max(1.0) as usize;
        let mut files = 0;
        // At least one group, while one is left for train.
        while files < target && left > 1 {
            let Some(g) = next.next() else { break };
            split_of_group[g] = split;
            files += sizes[g];
            left -= 1;
        }
    }
    Ok((
        group_of_file.iter().map(|&g| split_of_group[g]).collect(),
        names.len(),
    ))
}

/// The CSV of a split: `image_uuid,split,group`, one row per file (quoted where needed).
pub fn split_csv(relative: &[String], splits: &[Split], depth: usize) -> Result<Vec<u8>, String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = |e: csv::Error| e.to_string();
    w.write_record(["image_uuid", "split", "group"])
        .map_err(err)?;
    for (r, s) in relative.iter().zip(splits) {
        w.write_record([r.as_str(), s.name(), &group_of(r, depth)])
            .map_err(err)?;
    }
    w.into_inner().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(n_groups: usize, per: usize) -> Vec<String> {
        (0..n_groups)
            .flat_map(|g| (0..per).map(move |f| format!("sub-{g:02}/anat/f{f}.png")))
            .collect()
    }

    fn plan(val: f64, test: f64, depth: usize) -> SplitPlan {
        SplitPlan {
            val,
            test,
            seed: 7,
            depth,
        }
    }

    #[test]
    fn groups_are_the_leading_folders() {
        assert_eq!(group_of("sub-01/anat/t1.nii.gz", 1), "sub-01");
        assert_eq!(group_of("sub-01/ses-2/anat/t1.nii.gz", 2), "sub-01/ses-2");
        assert_eq!(group_of("top.png", 1), "top.png");
        assert_eq!(group_of("sub-01/t1.png", 0), "sub-01/t1.png");
        assert_eq!(group_of("sub-01/t1.png", 3), "sub-01/t1.png");
    }

    #[test]
    fn no_group_is_in_two_splits_and_the_shares_are_near() {
        let f = files(40, 5);
        let (splits, groups) = assign_splits(&f, plan(0.1, 0.2, 1)).unwrap();
        assert_eq!(groups, 40);
        let mut by_group = std::collections::HashMap::new();
        for (name, s) in f.iter().zip(&splits) {
            let g = group_of(name, 1);
            assert_eq!(*by_group.entry(g).or_insert(*s), *s, "{name} split apart");
        }
        let count = |want| splits.iter().filter(|&&s| s == want).count();
        assert_eq!((count(Split::Test), count(Split::Val)), (40, 20));
        assert_eq!(count(Split::Train), 140);
    }

    #[test]
    fn a_seed_gives_one_split_and_another_seed_another() {
        let f = files(30, 2);
        let a = assign_splits(&f, plan(0.2, 0.2, 1)).unwrap();
        assert_eq!(a, assign_splits(&f, plan(0.2, 0.2, 1)).unwrap());
        let other = SplitPlan {
            seed: 8,
            ..plan(0.2, 0.2, 1)
        };
        assert_ne!(a, assign_splits(&f, other).unwrap());
    }

    #[test]
    fn small_sets_keep_a_group_for_every_split_and_for_train() {
        // Three groups and tiny shares: one each.
        let (s, _) = assign_splits(&files(3, 4), plan(0.01, 0.01, 1)).unwrap();
        for want in Split::ALL {
            assert_eq!(s.iter().filter(|&&x| x == want).count(), 4, "{want}");
        }
        // One group: everything stays in train.
        let (s, _) = assign_splits(&files(1, 4), plan(0.3, 0.3, 1)).unwrap();
        assert!(s.iter().all(|&x| x == Split::Train));
        // Depth 0: files are their own groups.
        let (_, groups) = assign_splits(&files(2, 3), plan(0.2, 0.0, 0)).unwrap();
        assert_eq!(groups, 6);
    }

    #[test]
    fn the_csv_quotes_what_needs_it() {
        let names = vec!["a,b/x.png".to_string(), "plain/y.png".to_string()];
        let text = split_csv(&names, &[Split::Train, Split::Val], 1).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert_eq!(
            text,
            "image_uuid,split,group\n\"a,b/x.png\",train,\"a,b\"\nplain/y.png,val,plain\n"
        );
    }

    #[test]
    fn shares_must_leave_files_for_train() {
        for (v, t) in [(0.5, 0.5), (-0.1, 0.1), (1.0, 0.0), (f64::NAN, 0.1)] {
            assert!(
                assign_splits(&files(4, 1), plan(v, t, 1)).is_err(),
                "{v} {t}"
            );
        }
    }
}
