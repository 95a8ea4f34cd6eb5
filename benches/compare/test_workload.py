# python3 benches/compare/test_workload.py   (no packages needed)
"""The bookkeeping: every order lands in exactly one bucket, and bad records raise."""

import unittest

from workload import BookkeepingError, percentile, plan_steady, tally


class TallyTest(unittest.TestCase):
    def test_buckets_and_lateness(self):
        deadline = {1: 10.0, 2: 10.0, 3: 10.0, 4: 10.0, 5: 10.0}
        paid = {2, 5}
        closes = [(1, 10.5), (5, 10.2), (3, 13.0), (3, 13.5)]
        t = tally(deadline, paid, closes)
        self.assertEqual((t.created, t.unpaid, t.closed, t.paid, t.lost, t.wrong, t.twice),
                         (5, 3, 2, 1, 1, 1, 1))
        self.assertEqual(t.lateness, [0.5, 3.0])
        self.assertAlmostEqual(t.within_1s, 100 / 3)  # lost orders count as not on time
        self.assertEqual((t.p50, t.max), (0.5, 3.0))

    def test_unknown_ids_raise(self):
        with self.assertRaises(BookkeepingError):
            tally({1: 0.0}, set(), [(2, 1.0)])
        with self.assertRaises(BookkeepingError):
            tally({1: 0.0}, {7}, [])

    def test_percentile_is_nearest_rank(self):
        xs = list(range(1, 101))
        self.assertEqual([percentile(xs, q) for q in (1, 50, 99, 100)], [1, 50, 99, 100])
        self.assertIsNone(percentile([], 50))

    def test_payments_fall_before_the_deadline(self):
        p = plan_steady(1000, 10, 5, 65, 0.8, seed=1)
        paid = [i for i in range(p.n) if p.pay_at[i] is not None]
        self.assertTrue(700 < len(paid) < 900)
        self.assertTrue(all(p.create_at[i] <= p.pay_at[i] <= p.create_at[i] + p.window[i]
                            for i in paid))


if __name__ == "__main__":
    unittest.main()
