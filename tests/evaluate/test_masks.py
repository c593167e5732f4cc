import numpy as np
import pandas as pd

from stages.evaluate.definitions import SIZE_BUCKETS, query_masks


def test_size_buckets_and_known_split():
    # sides 10, 20, 29.9, 45, 99, 100, 300 px -> buckets [0,20) [20,30) [20,30) [30,60) [60,100) 100+ 100+
    sides = np.array([10, 20, 29.9, 45, 99, 100, 300])
    q = pd.DataFrame({"category_id": [1, 2, 1, 3, 1, 2, 3], "area": sides**2})
    m = query_masks(q, known_ids=[1, 2])
    assert m["known"].tolist() == [True, True, True, False, True, True, False]
    assert (m["known"] ^ m["unknown"]).all() and m["all"].all()
    assert m["size_0-20"].tolist() == [1, 0, 0, 0, 0, 0, 0]
    assert m["size_20-30"].sum() == 2 and m["size_30-60"].sum() == 1
    assert m["size_60-100"].tolist()[4] and m["size_100+"].sum() == 2
    # the buckets partition the queries
    assert sum(m[name].astype(int) for name in SIZE_BUCKETS).tolist() == [1] * 7
