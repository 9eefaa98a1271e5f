//! Exact sums of integers and floats, for the numeric reducers.
//!
//! [`Fixed`] is a long fixed-point accumulator in the manner of Kulisch's
//! "long accumulator" (U. Kulisch, *Computer Arithmetic and Validity*, de
//! Gruyter 2008; R. M. Neal, "Fast exact summation using small and large
//! superaccumulators", arXiv:1505.05571, 2015): a two's complement integer
//! counting units of 2^-[`SCALE_BITS`]. Every finite f64 (down to the
//! smallest subnormal, 2^-1074), every integer of 128 bits, and the exact
//! square of every finite f64 (down to 2^-2148, up to 2^2048) is a whole
//! number of such units, so adding them is integer addition: exact, and
//! associative and commutative, so the order and grouping of combines
//! (chunk size, tree shape, a restart) cannot change a sum. Only the final
//! answer is rounded, once: [`Fixed::to_f64`] gives the f64 nearest the
//! exact value (ties to even, IEEE 754 round-to-nearest, overflowing to
//! +-inf as IEEE does), and [`Fixed::div_to_f64`] the f64 nearest the exact
//! quotient by a count (a mean).
//!
//! The accumulator is kept sparse: only the 64-bit limbs between the lowest
//! and highest significant ones are stored (a limb index and the limbs), so
//! a sum of prices or of integers holds two or three limbs inline, and the
//! full 4,260-bit range costs nothing until a sum spans it.

use smallvec::SmallVec;

/// Bits below the binary point: 34 whole limbs, so integers start at a limb
/// boundary and the exact square of the smallest subnormal (2^-2148) is
/// still a whole number of units.
pub const SCALE_BITS: u32 = 2176;
const SCALE_LIMBS: usize = (SCALE_BITS / 64) as usize;
/// Position of the lowest bit an f64 can hold (2^-1074).
const F64_MIN_LSB: usize = SCALE_BITS as usize - 1074;
/// Limbs a stored accumulator may span: squares reach 2^2048, and 2^64
/// such terms add 64 bits more.
const LIMBS_MAX: usize = SCALE_LIMBS + 2048 / 64 + 2;

type Limbs = SmallVec<[u64; 3]>;

/// An exact number: the two's complement integer `limbs` (little-endian)
/// times 2^(64 * lo - SCALE_BITS). Kept normalized (no zero limb at the
/// bottom, no redundant sign limb at the top; zero is no limbs), so equal
/// values are equal structs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fixed {
    lo: u16,
    limbs: Limbs,
}

fn sign_limb(negative: bool) -> u64 {
    if negative {
        u64::MAX
    } else {
        0
    }
}

impl Fixed {
    pub fn zero() -> Fixed {
        Fixed::default()
    }

    pub fn is_zero(&self) -> bool {
        self.limbs.is_empty()
    }

    pub fn is_negative(&self) -> bool {
        self.limbs.last().is_some_and(|t| t >> 63 == 1)
    }

    fn hi(&self) -> usize {
        self.lo as usize + self.limbs.len()
    }

    /// Limb `i` of the infinite two's complement form.
    fn limb(&self, i: usize) -> u64 {
        let lo = self.lo as usize;
        if i < lo {
            0
        } else if i >= self.hi() {
            sign_limb(self.is_negative())
        } else {
            self.limbs[i - lo]
        }
    }

    fn normalized(mut lo: usize, mut limbs: Limbs) -> Fixed {
        while let [.., next, top] = limbs[..] {
            let redundant = (top == 0 && next >> 63 == 0) || (top == u64::MAX && next >> 63 == 1);
            if !redundant {
                break;
            }
            limbs.pop();
        }
        if limbs[..] == [0] {
            limbs.pop();
        }
        let zeros = limbs.iter().take_while(|&&l| l == 0).count();
        if zeros > 0 {
            limbs.drain(..zeros);
            lo += zeros;
        }
        if limbs.is_empty() {
            lo = 0;
        }
        Fixed { lo: lo as u16, limbs }
    }

    /// The value in units of 2^(64 * lo - SCALE_BITS), when it spans at
    /// most the two limbs from `lo`.
    fn window(&self, lo: usize) -> Option<i128> {
        if (self.lo as usize) < lo || self.hi() > lo + 2 {
            return None;
        }
        let (low, high) = (u128::from(self.limb(lo)), u128::from(self.limb(lo + 1)));
        Some((high << 64 | low) as i128)
    }

    /// The exact sum.
    pub fn add(&self, other: &Fixed) -> Fixed {
        if self.is_zero() {
            return other.clone();
        }
        if other.is_zero() {
            return self.clone();
        }
        let lo = self.lo.min(other.lo) as usize;
        // Sums of integers, or of floats of similar magnitudes, fit two
        // limbs: one i128 addition.
        if let (Some(a), Some(b)) = (self.window(lo), other.window(lo)) {
            if let Some(sum) = a.checked_add(b) {
                let limbs: Limbs = [sum as u64, (sum as u128 >> 64) as u64].into_iter().collect();
                return Fixed::normalized(lo, limbs);
            }
        }
        let hi = self.hi().max(other.hi()) + 1;
        let mut limbs = Limbs::with_capacity(hi - lo);
        let mut carry = false;
        for i in lo..hi {
            let (s, c1) = self.limb(i).overflowing_add(other.limb(i));
            let (s, c2) = s.overflowing_add(u64::from(carry));
            carry = c1 || c2;
            limbs.push(s);
        }
        Fixed::normalized(lo, limbs)
    }

    pub fn neg(&self) -> Fixed {
        if self.is_zero() {
            return Fixed::zero();
        }
        let mut limbs: Limbs = self.limbs.iter().map(|l| !l).collect();
        limbs.push(!sign_limb(self.is_negative()));
        for l in limbs.iter_mut() {
            let (s, c) = l.overflowing_add(1);
            *l = s;
            if !c {
                break;
            }
        }
        Fixed::normalized(self.lo as usize, limbs)
    }

    /// `(-1)^negative * mag * 2^(pos - SCALE_BITS)`.
    fn from_parts(negative: bool, mag: u128, pos: usize) -> Fixed {
        let (limb, off) = (pos / 64, (pos % 64) as u32);
        let low = mag << off;
        let high = if off == 0 { 0 } else { (mag >> (128 - off)) as u64 };
        let mut limbs: Limbs = [low as u64, (low >> 64) as u64, high].into_iter().collect();
        if limbs[2] >> 63 == 1 {
            // A positive number needs a clear top bit.
            limbs.push(0);
        }
        let positive = Fixed::normalized(limb, limbs);
        if negative {
            positive.neg()
        } else {
            positive
        }
    }

    /// An integer of up to 128 bits.
    pub fn from_int(i: i128) -> Fixed {
        Fixed::from_parts(i < 0, i.unsigned_abs(), SCALE_BITS as usize)
    }

    /// The square of an integer of magnitude below 2^64.
    pub fn square_int(magnitude: u64) -> Fixed {
        let m = u128::from(magnitude);
        Fixed::from_parts(false, m * m, SCALE_BITS as usize)
    }

    /// `x` as significand and exponent: `x = (-1)^neg * m * 2^e`, m < 2^53.
    fn split(x: f64) -> (bool, u64, i32) {
        let bits = x.to_bits();
        let negative = bits >> 63 == 1;
        let biased = ((bits >> 52) & 0x7ff) as i32;
        let frac = bits & ((1 << 52) - 1);
        if biased == 0 {
            (negative, frac, -1074)
        } else {
            (negative, frac | (1 << 52), biased - 1075)
        }
    }

    /// A finite float, exactly. (The caller keeps inf and NaN apart.)
    pub fn from_f64(x: f64) -> Fixed {
        debug_assert!(x.is_finite());
        let (negative, m, e) = Fixed::split(x);
        Fixed::from_parts(negative, u128::from(m), (e + SCALE_BITS as i32) as usize)
    }

    /// The exact square of a finite float.
    pub fn square_f64(x: f64) -> Fixed {
        debug_assert!(x.is_finite());
        let (_, m, e) = Fixed::split(x);
        let m = u128::from(m);
        Fixed::from_parts(false, m * m, (2 * e + SCALE_BITS as i32) as usize)
    }

    /// The value as an integer, if it is one and fits 128 bits.
    pub fn to_i128(&self) -> Option<i128> {
        if self.is_zero() {
            return Some(0);
        }
        if (self.lo as usize) < SCALE_LIMBS || self.hi() > SCALE_LIMBS + 2 {
            return None;
        }
        let low = u128::from(self.limb(SCALE_LIMBS));
        let high = u128::from(self.limb(SCALE_LIMBS + 1));
        Some((high << 64 | low) as i128)
    }

    /// The sign and the magnitude's limbs from limb 0 up.
    fn magnitude(&self) -> (bool, Vec<u64>) {
        let negative = self.is_negative();
        let abs = if negative { self.neg() } else { self.clone() };
        let mut mag = vec![0u64; abs.lo as usize];
        mag.extend_from_slice(&abs.limbs);
        (negative, mag)
    }

    /// The f64 nearest the exact value (ties to even; +-inf past f64's
    /// range, as IEEE 754 rounds; an exact zero is +0.0).
    pub fn to_f64(&self) -> f64 {
        let (negative, mag) = self.magnitude();
        let r = round_magnitude(&mag, false);
        if negative {
            -r
        } else {
            r
        }
    }

    /// The f64 nearest the exact quotient `self / d` (d > 0), rounded once.
    pub fn div_to_f64(&self, d: u64) -> f64 {
        let (negative, mut mag) = self.magnitude();
        let d = u128::from(d.max(1));
        let mut rem: u128 = 0;
        for limb in mag.iter_mut().rev() {
            let cur = (rem << 64) | u128::from(*limb);
            *limb = (cur / d) as u64;
            rem = cur % d;
        }
        let r = round_magnitude(&mag, rem != 0);
        if negative {
            -r
        } else {
            r
        }
    }

    /// Stored form: `lo u16 | n u8 | n limbs u64`, big-endian.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.lo.to_be_bytes());
        out.push(self.limbs.len() as u8);
        for l in &self.limbs {
            out.extend_from_slice(&l.to_be_bytes());
        }
    }

    /// Reads the stored form from the front of `bytes`; the rest follows.
    pub fn decode_from(bytes: &[u8]) -> Option<(Fixed, &[u8])> {
        let lo = u16::from_be_bytes(bytes.get(..2)?.try_into().ok()?);
        let n = *bytes.get(2)? as usize;
        let body = bytes.get(3..3 + 8 * n)?;
        if lo as usize + n > LIMBS_MAX {
            return None;
        }
        let limbs: Limbs = body
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or_default()))
            .collect();
        let f = Fixed::normalized(lo as usize, limbs.clone());
        // Only the normalized form is ever written.
        if f.lo != lo || f.limbs != limbs {
            return None;
        }
        Some((f, &bytes[3 + 8 * n..]))
    }
}

fn bit(mag: &[u64], p: usize) -> bool {
    mag.get(p / 64).is_some_and(|l| (l >> (p % 64)) & 1 == 1)
}

/// Whether any bit below position `p` is set.
fn any_below(mag: &[u64], p: usize) -> bool {
    let (limb, off) = (p / 64, p % 64);
    mag.iter().take(limb).any(|&l| l != 0)
        || (off > 0 && mag.get(limb).is_some_and(|l| l & ((1u64 << off) - 1) != 0))
}

/// 53 bits of `mag` from position `q` up.
fn bits53(mag: &[u64], q: usize) -> u64 {
    let at = |i: usize| u128::from(mag.get(i).copied().unwrap_or(0));
    let (limb, off) = (q / 64, q % 64);
    let wide = (at(limb + 1) << 64) | at(limb);
    ((wide >> off) as u64) & ((1u64 << 53) - 1)
}

/// The f64 nearest `mag * 2^-SCALE_BITS` (plus less than one unit more when
/// `sticky`), for a non-negative magnitude.
fn round_magnitude(mag: &[u64], sticky: bool) -> f64 {
    let Some(top) = mag.iter().rposition(|&l| l != 0) else {
        return 0.0;
    };
    let h = top * 64 + 63 - mag[top].leading_zeros() as usize;
    let mut q = h.saturating_sub(52).max(F64_MIN_LSB);
    let mut m = bits53(mag, q);
    let round = q > 0 && bit(mag, q - 1);
    let rest = sticky || (q > 1 && any_below(mag, q - 1));
    if round && (rest || m & 1 == 1) {
        m += 1;
        if m == 1 << 53 {
            m >>= 1;
            q += 1;
        }
    }
    if m == 0 {
        return 0.0;
    }
    if m < 1 << 52 {
        // Subnormal (q is the lowest position an f64 holds).
        return f64::from_bits(m);
    }
    let biased = q - (F64_MIN_LSB - 1);
    if biased >= 2047 {
        return f64::INFINITY;
    }
    f64::from_bits(((biased as u64) << 52) | (m & ((1 << 52) - 1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cmp::Ordering;

    /// An independent exact oracle: sign and magnitude in base 2^32, values
    /// scaled by 2^2148 (every f64 and every square of one is an integer).
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Big {
        negative: bool,
        mag: Vec<u32>,
    }

    const ORACLE_SCALE: i64 = 2148;

    fn trim(mut v: Vec<u32>) -> Vec<u32> {
        while v.last() == Some(&0) {
            v.pop();
        }
        v
    }

    fn cmp_mag(a: &[u32], b: &[u32]) -> Ordering {
        let (a, b) = (trim(a.to_vec()), trim(b.to_vec()));
        a.len().cmp(&b.len()).then_with(|| a.iter().rev().cmp(b.iter().rev()))
    }

    fn add_mag(a: &[u32], b: &[u32]) -> Vec<u32> {
        let mut out = Vec::new();
        let mut carry = 0u64;
        for i in 0..a.len().max(b.len()) {
            let s = u64::from(*a.get(i).unwrap_or(&0)) + u64::from(*b.get(i).unwrap_or(&0)) + carry;
            out.push(s as u32);
            carry = s >> 32;
        }
        out.push(carry as u32);
        trim(out)
    }

    /// a - b for a >= b.
    fn sub_mag(a: &[u32], b: &[u32]) -> Vec<u32> {
        let mut out = Vec::new();
        let mut borrow = 0i64;
        for (i, &x) in a.iter().enumerate() {
            let mut d = i64::from(x) - i64::from(*b.get(i).unwrap_or(&0)) - borrow;
            borrow = 0;
            if d < 0 {
                d += 1 << 32;
                borrow = 1;
            }
            out.push(d as u32);
        }
        trim(out)
    }

    impl Big {
        fn zero() -> Big {
            Big { negative: false, mag: Vec::new() }
        }

        /// `(-1)^negative * m * 2^shift`, shift >= 0.
        fn shifted(negative: bool, m: u128, shift: i64) -> Big {
            assert!(shift >= 0);
            let mut mag = vec![0u32; (shift / 32) as usize];
            let wide: Vec<u32> =
                (0..5).map(|i| if i < 4 { (m >> (32 * i)) as u32 } else { 0 }).collect();
            let off = (shift % 32) as u32;
            let mut carry = 0u32;
            for w in wide {
                let v = (u64::from(w) << off) | u64::from(carry);
                mag.push(v as u32);
                carry = (v >> 32) as u32;
            }
            let mag = trim(mag);
            Big { negative: negative && !mag.is_empty(), mag }
        }

        fn of_f64(x: f64) -> Big {
            let (neg, m, e) = Fixed::split(x);
            Big::shifted(neg, u128::from(m), i64::from(e) + ORACLE_SCALE)
        }

        fn of_int(i: i128) -> Big {
            Big::shifted(i < 0, i.unsigned_abs(), ORACLE_SCALE)
        }

        fn add(&self, o: &Big) -> Big {
            if self.negative == o.negative {
                return Big { negative: self.negative, mag: add_mag(&self.mag, &o.mag) };
            }
            match cmp_mag(&self.mag, &o.mag) {
                Ordering::Equal => Big::zero(),
                Ordering::Greater => {
                    Big { negative: self.negative, mag: sub_mag(&self.mag, &o.mag) }
                }
                Ordering::Less => Big { negative: o.negative, mag: sub_mag(&o.mag, &self.mag) },
            }
        }

        fn sub(&self, o: &Big) -> Big {
            let mut n = o.clone();
            n.negative = !n.negative && !n.mag.is_empty();
            self.add(&n)
        }

        fn mul_small(&self, k: u64) -> Big {
            let mut out = Vec::with_capacity(self.mag.len() + 3);
            let mut carry = 0u128;
            for &l in &self.mag {
                let v = u128::from(l) * u128::from(k) + carry;
                out.push(v as u32);
                carry = v >> 32;
            }
            while carry > 0 {
                out.push(carry as u32);
                carry >>= 32;
            }
            let mag = trim(out);
            Big { negative: self.negative && !mag.is_empty(), mag }
        }

        fn abs_cmp(&self, o: &Big) -> Ordering {
            cmp_mag(&self.mag, &o.mag)
        }
    }

    /// Whether `r` is the f64 nearest `exact / div` (ties to even).
    fn is_nearest(r: f64, exact: &Big, div: u64) -> bool {
        // |exact / div| >= f64::MAX + half an ulp = 2^1024 - 2^970 rounds
        // to an infinity.
        let edge = Big::shifted(false, (1u128 << 54) - 1, 970 + ORACLE_SCALE).mul_small(div);
        let overflows = exact.abs_cmp(&edge) != Ordering::Less;
        if r.is_infinite() || overflows {
            return r.is_infinite() && overflows && exact.negative == (r < 0.0);
        }
        let err = |c: f64| exact.sub(&Big::of_f64(c).mul_small(div));
        let e = err(r);
        for n in [r.next_up(), r.next_down()] {
            if !n.is_finite() {
                continue;
            }
            match e.abs_cmp(&err(n)) {
                Ordering::Less => {}
                Ordering::Greater => return false,
                Ordering::Equal => {
                    if Fixed::split(r).1 & 1 == 1 {
                        return false;
                    }
                }
            }
        }
        true
    }

    fn hostile_f64() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<u64>().prop_map(f64::from_bits).prop_filter("finite", |x| x.is_finite()),
            (any::<bool>(), 0u64..(1 << 52)).prop_map(|(s, m)| {
                let x = f64::from_bits(m);
                if s {
                    -x
                } else {
                    x
                }
            }),
            (-1e308f64..1e308),
            prop_oneof![
                Just(f64::MAX),
                Just(-f64::MAX),
                Just(f64::MIN_POSITIVE),
                Just(5e-324),
                Just(-0.0),
                Just(1e16),
                Just(1.0),
                Just(0.1)
            ],
            (-1000i64..1000, -60i32..60).prop_map(|(m, e)| m as f64 * 2f64.powi(e)),
        ]
    }

    fn sum_fixed(xs: &[f64]) -> Fixed {
        xs.iter().fold(Fixed::zero(), |a, &x| a.add(&Fixed::from_f64(x)))
    }

    /// Sums by a random tree shape: split at `cuts`, recursively.
    fn sum_tree(xs: &[f64], seed: u64) -> Fixed {
        if xs.len() <= 1 {
            return sum_fixed(xs);
        }
        let at = 1 + (seed as usize % (xs.len() - 1));
        let next = seed.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15;
        sum_tree(&xs[at..], next).add(&sum_tree(&xs[..at], next.wrapping_mul(3)))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// The combine is associative and commutative (any order and any
        /// tree shape give the same state) and the rounded sum is the f64
        /// nearest the exact sum.
        #[test]
        fn sums_are_exact_whatever_the_order(
            mut xs in proptest::collection::vec(hostile_f64(), 0..40),
            seed in any::<u64>(),
        ) {
            // Cancelling pairs make the hardest sums.
            if seed % 3 == 0 {
                let extra: Vec<f64> = xs.iter().take(5).map(|x| -x * 0.5).collect();
                xs.extend(extra);
            }
            let forward = sum_fixed(&xs);
            let mut rev = xs.clone();
            rev.reverse();
            prop_assert_eq!(&sum_fixed(&rev), &forward);
            prop_assert_eq!(&sum_tree(&xs, seed), &forward);
            let exact = xs.iter().fold(Big::zero(), |a, &x| a.add(&Big::of_f64(x)));
            let r = forward.to_f64();
            prop_assert!(is_nearest(r, &exact, 1), "sum {r:e} of {xs:?}");
            if !xs.is_empty() {
                let n = xs.len() as u64;
                let mean = forward.div_to_f64(n);
                prop_assert!(is_nearest(mean, &exact, n), "mean {mean:e} of {xs:?}");
            }
            // The stored form round-trips.
            let mut enc = Vec::new();
            forward.encode_into(&mut enc);
            enc.push(7);
            prop_assert_eq!(Fixed::decode_from(&enc), Some((forward.clone(), &[7u8][..])));
        }

        /// Squares are exact too: the sum of squares rounds to the nearest f64.
        #[test]
        fn sums_of_squares_are_exact(xs in proptest::collection::vec(hostile_f64(), 0..20)) {
            let s = xs.iter().fold(Fixed::zero(), |a, &x| a.add(&Fixed::square_f64(x)));
            let exact = xs.iter().fold(Big::zero(), |a, &x| {
                let (_, m, e) = Fixed::split(x);
                a.add(&Big::shifted(false, u128::from(m) * u128::from(m), 2 * i64::from(e) + ORACLE_SCALE))
            });
            prop_assert!(is_nearest(s.to_f64(), &exact, 1));
        }

        /// Integers and their squares sum exactly, against i128/u128 arithmetic.
        #[test]
        fn integer_sums_are_exact(xs in proptest::collection::vec(any::<i64>(), 0..30), us in proptest::collection::vec(any::<u64>(), 0..4)) {
            let mut f = Fixed::zero();
            let mut want: i128 = 0;
            for &x in &xs {
                f = f.add(&Fixed::from_int(i128::from(x)));
                want += i128::from(x);
            }
            for &u in &us {
                f = f.add(&Fixed::from_int(i128::from(u)));
                want += i128::from(u);
            }
            prop_assert_eq!(f.to_i128(), Some(want));
            prop_assert_eq!(f.neg().to_i128(), Some(-want));
            let sq = us.iter().fold(Fixed::zero(), |a, &u| a.add(&Fixed::square_int(u)));
            let exact = us.iter().fold(Big::zero(), |a, &u| a.add(&Big::of_int(i128::from(u)).mul_small(u)));
            prop_assert!(is_nearest(sq.to_f64(), &exact, 1));
        }
    }

    /// The oracle itself refuses wrong answers (so the properties can fail).
    #[test]
    fn the_oracle_tells_nearest_from_not() {
        let exact = [0.1, 0.2, 0.3].iter().fold(Big::zero(), |a, &x| a.add(&Big::of_f64(x)));
        assert!(is_nearest(0.6, &exact, 1));
        assert!(!is_nearest(0.1 + 0.2 + 0.3, &exact, 1), "pairwise f64 adds are off by an ulp");
        assert!(!is_nearest(f64::INFINITY, &exact, 1));
        let huge = Big::of_f64(f64::MAX).add(&Big::of_f64(f64::MAX));
        assert!(is_nearest(f64::INFINITY, &huge, 1));
        assert!(!is_nearest(f64::MAX, &huge, 1));
        assert!(is_nearest(0.2, &exact, 3));
    }

    #[test]
    fn hand_picked_sums() {
        let sum = |xs: &[f64]| sum_fixed(xs).to_f64();
        assert_eq!(sum(&[0.1, 0.2, 0.3]), 0.6);
        assert_eq!(sum(&[1e100, 1.0, -1e100]), 1.0);
        assert_eq!(sum(&[f64::MAX, f64::MAX]), f64::INFINITY);
        assert_eq!(sum(&[f64::MAX, f64::MAX, -f64::MAX]), f64::MAX);
        // Half an ulp past f64::MAX ties to even: infinity; less stays MAX.
        assert_eq!(sum(&[f64::MAX, 2f64.powi(970)]), f64::INFINITY);
        assert_eq!(sum(&[f64::MAX, 2f64.powi(969)]), f64::MAX);
        assert_eq!(sum(&[-f64::MAX, -(2f64.powi(970))]), f64::NEG_INFINITY);
        assert_eq!(sum(&[5e-324, 5e-324]), 1e-323);
        assert_eq!(sum(&[]), 0.0);
        assert_eq!(sum(&[-0.5, -0.25]), -0.75);
        // 2^53 + 1 + 1: rounding once gives 2^53 + 2 (pairwise f64 adds
        // would give 2^53).
        assert_eq!(sum(&[9_007_199_254_740_992.0, 1.0, 1.0]), 9_007_199_254_740_994.0);
        assert_eq!(sum_fixed(&[2.5, 0.5]).to_i128(), Some(3));
        assert_eq!(sum_fixed(&[2.5]).to_i128(), None);
        let big = Fixed::from_int(i128::MAX).add(&Fixed::from_int(1));
        assert_eq!(big.to_i128(), None);
        assert_eq!(big.to_f64(), 2f64.powi(127));
        assert_eq!(Fixed::from_int(7).div_to_f64(2), 3.5);
        assert_eq!(Fixed::from_int(1).div_to_f64(3), 1.0 / 3.0);
        assert!(Fixed::decode_from(&[0, 34, 1, 0, 0, 0, 0, 0, 0, 0, 0]).is_none(), "zero limb");
        assert!(Fixed::decode_from(&[0, 34, 2, 0, 0, 0, 0, 0, 0, 0, 1]).is_none(), "short");
    }
}
