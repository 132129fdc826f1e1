#define BOOST_TEST_MODULE lora
#include <boost/test/unit_test.hpp>
