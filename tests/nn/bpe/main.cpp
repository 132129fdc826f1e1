#define BOOST_TEST_MODULE bpe
#include <boost/test/unit_test.hpp>
