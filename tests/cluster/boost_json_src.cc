// Boost.JSON is used header-only by the cluster tests (to read
// `tally status --json`); its implementation is compiled once, here.
#include <boost/json/src.hpp>
