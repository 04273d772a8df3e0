// Property test of KeyStore's open-addressing table against a model of the
// behaviour it replaced (boost::unordered_flat_map, modelled by std::map):
// random FindOrCreate / Find / Merge / Sweep / Add streams, including keys
// whose ids share low bits (so homes collide, runs wrap past the end of the
// table and deletions shift runs back), a small max_keys (full-store sweeps
// and refusals) and table growth. After every step the table invariants hold
// and the store holds exactly the model's keys with the same counters.
#include <gtest/gtest.h>

#include <map>
#include <ostream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "crdt/key_id.h"
#include "crdt/key_store.h"
#include "crdt/window_counter.h"

namespace tally::crdt {
namespace {

// The pre-table KeyStore semantics, on an ordered map.
class ModelStore {
 public:
  explicit ModelStore(const KeyStoreOptions& o) : options_(o) {}

  // Returns the counter (or nullptr when full) and how.
  WindowCounter* FindOrCreate(const KeyId& id, uint64_t window_ms, int64_t now,
                              KeyStore::Lookup* how) {
    if (auto it = map_.find(Key(id)); it != map_.end()) {
      *how = KeyStore::Lookup::kFound;
      return &it->second;
    }
    if (map_.size() >= options_.max_keys) {
      SweepWhenFull(now);
      if (map_.size() >= options_.max_keys) {
        *how = KeyStore::Lookup::kFull;
        return nullptr;
      }
    }
    *how = KeyStore::Lookup::kCreated;
    return &map_.emplace(Key(id),
                         WindowCounter(GeometryFor(window_ms, options_.buckets_per_window)))
                .first->second;
  }
  WindowCounter* Find(const KeyId& id) {
    auto it = map_.find(Key(id));
    return it == map_.end() ? nullptr : &it->second;
  }
  bool Merge(const KeyId& id, const WindowCounter& remote, int64_t now) {
    WindowCounter* c = Find(id);
    if (c == nullptr) {
      if (remote.Expired(BucketOf(now, remote.geometry()))) return true;
      if (map_.size() >= options_.max_keys) {
        SweepWhenFull(now);  // merges and checks share one pace
        if (map_.size() >= options_.max_keys) return false;
      }
      c = &map_.emplace(Key(id), WindowCounter(remote.geometry())).first->second;
    }
    if (!(c->geometry() == remote.geometry())) return false;
    c->Join(remote);
    return true;
  }
  void SweepWhenFull(int64_t now) {
    if (swept_when_full_ && now >= last_full_sweep_ms_ &&
        now - last_full_sweep_ms_ < options_.full_sweep_interval_ms) {
      return;
    }
    swept_when_full_ = true;
    last_full_sweep_ms_ = now;
    Sweep(now);
  }
  size_t Sweep(int64_t now) {
    size_t removed = 0;
    for (auto it = map_.begin(); it != map_.end();) {
      if (it->second.Expired(BucketOf(now, it->second.geometry()))) {
        it = map_.erase(it);
        ++removed;
      } else {
        ++it;
      }
    }
    reclaimed_ += removed;
    return removed;
  }
  size_t size() const { return map_.size(); }
  uint64_t reclaimed() const { return reclaimed_; }
  const std::map<std::pair<uint64_t, uint64_t>, WindowCounter>& map() const { return map_; }

 private:
  static std::pair<uint64_t, uint64_t> Key(const KeyId& id) { return {id.high, id.low}; }
  KeyStoreOptions options_;
  std::map<std::pair<uint64_t, uint64_t>, WindowCounter> map_;
  uint64_t reclaimed_ = 0;
  bool swept_when_full_ = false;
  int64_t last_full_sweep_ms_ = 0;
};

// "prefix<i>" without operator+(const char*, std::string): GCC 12 warns falsely on it.
std::string Name(const char* prefix, int64_t i) {
  std::string s = prefix;
  s += std::to_string(i);
  return s;
}

void ExpectSameContents(const KeyStore& store, const ModelStore& model) {
  ASSERT_TRUE(store.CheckInvariants());
  ASSERT_EQ(store.size(), model.size());
  size_t seen = 0;
  store.ForEach([&](const KeyId& id, const KeyStore::Entry& e) {
    ++seen;
    auto it = model.map().find({id.high, id.low});
    ASSERT_NE(it, model.map().end());
    EXPECT_TRUE(e.counter.SameState(it->second));
  });
  EXPECT_EQ(seen, model.size());
}

struct Params {
  size_t max_keys;
  size_t key_pool;
  uint64_t low_bits_mask;  // ids share all low bits outside this mask: homes collide
  uint64_t seed;
  friend void PrintTo(const Params& p, std::ostream* os) {
    *os << "max_keys=" << p.max_keys << " pool=" << p.key_pool << " mask=" << std::hex
        << p.low_bits_mask << std::dec << " seed=" << p.seed;
  }
};

class KeyStoreTableTest : public ::testing::TestWithParam<Params> {};

TEST_P(KeyStoreTableTest, BehavesLikeTheMapItReplaced) {
  const Params p = GetParam();
  const KeyStoreOptions options{
      .max_keys = p.max_keys, .buckets_per_window = 10, .full_sweep_interval_ms = 50};
  KeyStore store(options);
  ModelStore model(options);
  std::mt19937_64 rng(p.seed);
  auto pick = [&](uint64_t n) { return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng); };
  // Key pool: ids whose low bits mostly fall at the top of the table (the
  // first table is 16 slots, so homes 13..15 make runs wrap past the end).
  std::vector<KeyId> pool(p.key_pool);
  const uint64_t windows[] = {100, 1000, 7};
  std::vector<uint64_t> window_of(p.key_pool);
  for (size_t i = 0; i < pool.size(); ++i) {
    KeyId id = HashKey(Name("u", static_cast<int64_t>(i)), "/e", 1);
    id.low = (id.low & p.low_bits_mask) | (pick(4) == 0 ? 0 : ~p.low_bits_mask);
    pool[i] = id;
    window_of[i] = windows[pick(3)];
  }
  int64_t now = 1'000'000;
  for (int step = 0; step < 20'000; ++step) {
    if (pick(10) == 0) now += static_cast<int64_t>(pick(3) == 0 ? pick(3000) : pick(30));
    const size_t k = pick(pool.size());
    const KeyId& id = pool[k];
    switch (pick(10)) {
      case 0: {  // sweep
        const int64_t at = now + static_cast<int64_t>(pick(2000));
        ASSERT_EQ(store.Sweep(at), model.Sweep(at));
        break;
      }
      case 1: {  // merge a remote counter
        const Geometry g = GeometryFor(window_of[k], 10);
        WindowCounter remote(g);
        if (pick(4) != 0) remote.Add(1, BucketOf(now, g) - static_cast<int64_t>(pick(3)), 1);
        ASSERT_EQ(store.Merge(id, remote, now), model.Merge(id, remote, now));
        break;
      }
      case 2: {  // find
        const KeyStore::Entry* e = store.Find(id);
        const WindowCounter* c = model.Find(id);
        ASSERT_EQ(e == nullptr, c == nullptr);
        if (e != nullptr) {
          EXPECT_TRUE(e->counter.SameState(*c));
        }
        break;
      }
      default: {  // find or create, and count a hit sometimes (else it stays expired)
        KeyStore::Lookup how, model_how;
        const uint64_t epoch = store.layout_epoch();
        KeyStore::Entry* e = store.FindOrCreate(id, window_of[k], now, &how);
        WindowCounter* c = model.FindOrCreate(id, window_of[k], now, &model_how);
        ASSERT_EQ(how, model_how);
        ASSERT_EQ(e == nullptr, c == nullptr);
        if (e == nullptr) break;
        if (how == KeyStore::Lookup::kCreated && store.layout_epoch() == epoch) {
          // No growth: the other entries did not move (spot-check one).
          const KeyId& other = pool[pick(pool.size())];
          if (!(other == id) && store.Find(other) != nullptr) {
            EXPECT_EQ(store.Find(other)->counter.SameState(*model.Find(other)), true);
          }
        }
        if (pick(3) != 0) {
          const int64_t b = BucketOf(now, e->counter.geometry());
          e->counter.Add(0, b, 1);
          c->Add(0, b, 1);
        }
        break;
      }
    }
    if (step % 97 == 0) ExpectSameContents(store, model);
    ASSERT_EQ(store.size(), model.size());
  }
  ExpectSameContents(store, model);
  EXPECT_EQ(store.reclaimed(), model.reclaimed());
  ASSERT_EQ(store.Sweep(now + 1'000'000), model.Sweep(now + 1'000'000));
  EXPECT_EQ(store.size(), 0u);
  EXPECT_TRUE(store.CheckInvariants());
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, KeyStoreTableTest,
    ::testing::Values(Params{40, 80, ~0ull, 1},     // uniform ids, small full store
                      Params{40, 80, 0x7, 2},       // 8 homes only: long runs, wrap
                      Params{1000, 600, ~0ull, 3},  // growth, never full
                      Params{1000, 600, 0xFF, 4},   // growth with clustered homes
                      Params{200, 400, 0x3, 5},     // extreme clustering, full
                      Params{13, 30, ~0ull, 6}));

TEST(KeyStoreTableTest, PointersStayValidUntilTheLayoutEpochMoves) {
  KeyStore store({.max_keys = 100'000, .buckets_per_window = 10});
  KeyStore::Lookup how;
  KeyId first = HashKey("first", "/e", 1000);
  KeyStore::Entry* e = store.FindOrCreate(first, 1000, 0, &how);
  e->counter.Add(0, 0, 1);
  uint64_t epoch = store.layout_epoch();
  size_t growths = 0;
  for (int i = 0; i < 5000; ++i) {
    store.FindOrCreate(HashKey(Name("k", static_cast<int64_t>(i)), "/e", 1000), 1000, 0, &how)
        ->counter.Add(0, 0, 1);
    if (store.layout_epoch() == epoch) {
      ASSERT_EQ(store.Find(first), e);  // not moved
    } else {
      ++growths;
      epoch = store.layout_epoch();
      e = store.Find(first);
      ASSERT_NE(e, nullptr);
    }
  }
  EXPECT_GE(growths, 8u);  // 16 -> 8192 slots
  EXPECT_EQ(e->counter.Sum(0), 1u);
  // A sweep that removes nothing keeps the layout; one that removes moves it.
  EXPECT_EQ(store.Sweep(50), 0u);
  EXPECT_EQ(store.layout_epoch(), epoch);
  EXPECT_EQ(store.Sweep(1'000'000), 5001u);
  EXPECT_NE(store.layout_epoch(), epoch);
  EXPECT_TRUE(store.CheckInvariants());
}

TEST(KeyStoreTableTest, MemoryIsOneSlotArrayPlusBlocks) {
  KeyStore store({.max_keys = 1000, .buckets_per_window = 10});
  EXPECT_EQ(store.MemoryBytes(), 0u);
  KeyStore::Lookup how;
  for (int i = 0; i < 100; ++i) {
    store.FindOrCreate(HashKey(Name("k", static_cast<int64_t>(i)), "/e", 60'000), 60'000, 0, &how)
        ->counter.Add(0, 0, 1);
  }
  EXPECT_EQ(store.capacity(), 128u);  // 100 > 7/8 of 64
  EXPECT_EQ(store.MemoryBytes(), 128 * 32 + 100 * 64u);
}

}  // namespace
}  // namespace tally::crdt
